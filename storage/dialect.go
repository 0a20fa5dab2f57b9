package storage

import (
	"strconv"
	"strings"
)

// Dialect names the SQL database behind a [SQL] store. The schema and the
// queries are written once, in SQL both databases accept (for instance
// INSERT ... ON CONFLICT (username) DO NOTHING, SQLite 3.24 and PostgreSQL
// 9.5 alike); the methods of Dialect are the only place where they differ.
// Credentials are TEXT, so no binary column type is needed.
//
// The zero Dialect is not valid.
type Dialect uint8

// Supported dialects.
const (
	// SQLite is SQLite 3 through modernc.org/sqlite (driver name "sqlite").
	SQLite Dialect = iota + 1
	// PostgreSQL is PostgreSQL through pgx's database/sql driver.
	PostgreSQL
)

// String returns the dialect's name, as used in errors and logs.
func (d Dialect) String() string {
	switch d {
	case SQLite:
		return "sqlite"
	case PostgreSQL:
		return "postgresql"
	}
	return "dialect(" + strconv.Itoa(int(d)) + ")"
}

// valid reports whether d is one of the declared dialects.
func (d Dialect) valid() bool { return d == SQLite || d == PostgreSQL }

// rebind rewrites a query written with '?' bind parameters into d's own
// syntax: PostgreSQL numbers them ($1, $2, ...). Queries are constants of
// this package that hold no '?' inside literals, so a plain scan is exact.
// It runs once per statement, when statements are prepared.
func (d Dialect) rebind(query string) string {
	if d != PostgreSQL {
		return query
	}
	var b strings.Builder
	b.Grow(len(query) + 8)
	n := 0
	for i := 0; i < len(query); i++ {
		if query[i] != '?' {
			b.WriteByte(query[i])
			continue
		}
		n++
		b.WriteByte('$')
		b.WriteString(strconv.Itoa(n))
	}
	return b.String()
}
