package router

import (
	"errors"
	"reflect"
	"testing"
)

type fakeModule struct {
	name     string
	routes   []Route
	features []string
}

func (m fakeModule) Name() string                 { return m.name }
func (m fakeModule) Routes() []Route              { return m.routes }
func (m fakeModule) Features() []string           { return m.features }
func (m fakeModule) HandleIQ(c *Ctx, iq IQ) error { return nil }

func TestRegister(t *testing.T) {
	a := fakeModule{"a", []Route{{IQGet, "urn:a", "q"}}, []string{"urn:a", "urn:shared"}}
	b := fakeModule{"b", []Route{{IQSet, "urn:a", "q"}}, []string{"urn:shared", "urn:b"}}
	var r Router
	if err := r.Register(a, b); err != nil {
		t.Fatal(err)
	}
	r.AddFeatures("urn:core")
	if got := r.Lookup(Route{IQGet, "urn:a", "q"}); got == nil || got.Name() != "a" {
		t.Fatalf("Lookup get = %v", got)
	}
	if got := r.Lookup(Route{IQSet, "urn:a", "q"}); got == nil || got.Name() != "b" {
		t.Fatalf("Lookup set = %v", got)
	}
	if got := r.Lookup(Route{IQGet, "urn:none", "q"}); got != nil {
		t.Fatalf("Lookup of an unrouted payload = %v", got)
	}
	want := []string{"urn:a", "urn:b", "urn:core", "urn:shared"}
	if got := r.Features(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Features = %v, want %v", got, want)
	}
	dup := fakeModule{"dup", []Route{{IQGet, "urn:a", "q"}}, nil}
	if err := r.Register(dup); !errors.Is(err, ErrDuplicateRoute) {
		t.Fatalf("duplicate Register = %v, want ErrDuplicateRoute", err)
	}
}
