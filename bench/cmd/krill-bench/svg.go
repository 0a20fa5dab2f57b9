package main

import (
	"cmp"
	"fmt"
	"html"
	"math"
	"slices"
	"strings"
)

// Colours of the chart series, by server; a second N of the same server
// gets the lighter shade.
var seriesColours = map[string][2]string{
	"krill":    {"#1f6fb4", "#7fb3e0"},
	"prosody":  {"#2e9e44", "#8fd19e"},
	"ejabberd": {"#d0483a", "#f0a59d"},
}

func colour(server string, second bool) string {
	c, ok := seriesColours[server]
	if !ok {
		c = [2]string{"#777777", "#bbbbbb"}
	}
	if second {
		return c[1]
	}
	return c[0]
}

// short formats bytes as 740, 9.9k, 52k.
func short(v float64) string {
	switch a := math.Abs(v); {
	case a >= 10000:
		return fmt.Sprintf("%.0fk", v/1000)
	case a >= 1000:
		return fmt.Sprintf("%.1fk", v/1000)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

// idleSVG draws bytes per idle connection (median RSS, min–max whiskers)
// by stage and server on a logarithmic axis.
func idleSVG(recs []idleRecord) string {
	pts := points(recs)
	type series struct {
		server string
		n      int
	}
	var ss []series
	var stages []string
	for _, p := range pts {
		s := series{p.server, p.n}
		if !slices.Contains(ss, s) {
			ss = append(ss, s)
		}
		if !slices.Contains(stages, p.stage) {
			stages = append(stages, p.stage)
		}
	}
	slices.SortFunc(ss, func(a, b series) int {
		return cmp.Or(cmp.Compare(orderOf(serverOrder, a.server), orderOf(serverOrder, b.server)), cmp.Compare(a.n, b.n))
	})
	firstN := map[string]int{}
	for _, s := range ss {
		if _, ok := firstN[s.server]; !ok {
			firstN[s.server] = s.n
		}
	}
	const (
		width, height            = 960, 520
		left, right, top, bottom = 80, 20, 70, 60
	)
	maxV := 1.0
	for _, p := range pts {
		maxV = max(maxV, slices.Max(p.rss))
	}
	lo, hi := 2.0, math.Ceil(math.Log10(maxV)) // 100 B .. the decade above the largest
	if hi <= lo {
		hi = lo + 1
	}
	plotH := float64(height - top - bottom)
	y := func(v float64) float64 {
		l := math.Log10(max(v, math.Pow(10, lo)))
		return float64(top) + plotH*(1-(l-lo)/(hi-lo))
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="16" font-weight="bold">Server memory per idle connection (RSS, bytes, log scale; median of repeats, whiskers min–max)</text>`+"\n", left)
	// Grid and axis labels, one per decade with 2x and 5x minor lines.
	for d := lo; d <= hi; d++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, d)
			if math.Log10(v) > hi+1e-9 {
				break
			}
			yy := y(v)
			stroke := "#e4e4e4"
			if m == 1 {
				stroke = "#bbbbbb"
			}
			fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="%s"/>`+"\n", left, width-right, yy, yy, stroke)
			fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end" fill="#444">%s</text>`+"\n", left-6, yy+4, short(v))
		}
	}
	fmt.Fprintf(&b, `<text x="18" y="%d" transform="rotate(-90 18 %d)" text-anchor="middle">bytes per connection</text>`+"\n", top+int(plotH/2), top+int(plotH/2))
	// Legend.
	lx := left
	for _, s := range ss {
		label := fmt.Sprintf("%s N=%s", s.server, num(float64(s.n)))
		fmt.Fprintf(&b, `<rect x="%d" y="36" width="12" height="12" fill="%s"/><text x="%d" y="46">%s</text>`+"\n",
			lx, colour(s.server, s.n != firstN[s.server]), lx+16, html.EscapeString(label))
		lx += 30 + 7*len(label)
	}
	groupW := float64(width-left-right) / float64(len(stages))
	barW := groupW * 0.8 / float64(len(ss))
	for gi, st := range stages {
		gx := float64(left) + groupW*float64(gi)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle" font-size="14">%s</text>`+"\n", gx+groupW/2, height-bottom+22, st)
		for si, s := range ss {
			var p *point
			for _, q := range pts {
				if q.stage == st && q.server == s.server && q.n == s.n {
					p = q
				}
			}
			if p == nil {
				continue
			}
			x := gx + groupW*0.1 + barW*float64(si)
			med := median(p.rss)
			yt := y(med)
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s N=%d: %s B/conn</title></rect>`+"\n",
				x, yt, barW-2, float64(height-bottom)-yt, colour(s.server, s.n != firstN[s.server]), s.server, st, s.n, num(med))
			if len(p.rss) > 1 {
				cx := x + (barW-2)/2
				fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="black"/>`+"\n", cx, cx, y(slices.Min(p.rss)), y(slices.Max(p.rss)))
			}
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" font-size="11">%s</text>`+"\n", x+(barW-2)/2, yt-4, short(med))
		}
	}
	fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="black"/>`+"\n", left, width-right, height-bottom, height-bottom)
	b.WriteString("</svg>\n")
	return b.String()
}

// attackSVG draws the attack runs over time: the server's RSS (top) and
// the hostile connections still open (bottom), one line per server.
func attackSVG(samples []attackSample) string {
	byServer := map[string][]attackSample{}
	var servers []string
	maxT, maxRSS, maxOpen := 1.0, 1.0, 1.0
	for _, s := range samples {
		if _, ok := byServer[s.Server]; !ok {
			servers = append(servers, s.Server)
		}
		byServer[s.Server] = append(byServer[s.Server], s)
		maxT = max(maxT, s.T)
		maxRSS = max(maxRSS, mb(s.RSS))
		maxOpen = max(maxOpen, float64(s.HostileOpen))
	}
	slices.SortFunc(servers, func(a, b string) int { return cmp.Compare(orderOf(serverOrder, a), orderOf(serverOrder, b)) })
	const (
		width, height = 960, 640
		left, right   = 80, 20
		panelH        = 220
	)
	tops := [2]int{90, 90 + panelH + 70}
	niceMax := func(v float64) float64 {
		p := math.Pow(10, math.Floor(math.Log10(v)))
		for _, m := range []float64{1, 2, 2.5, 5, 10} {
			if m*p >= v {
				return m * p
			}
		}
		return 10 * p
	}
	// Samples run a little past the nominal duration: round time up to
	// a multiple of 10 s rather than to a nice number.
	maxT, maxRSS, maxOpen = math.Ceil(maxT/10-0.01)*10, niceMax(maxRSS*1.05), niceMax(maxOpen)
	x := func(t float64) float64 { return float64(left) + float64(width-left-right)*t/maxT }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="16" font-weight="bold">Pre-auth attack: hostile connections fail SASL and keep pinging while clients log in</text>`+"\n", left)
	lx := left
	for _, s := range servers {
		fmt.Fprintf(&b, `<rect x="%d" y="36" width="12" height="12" fill="%s"/><text x="%d" y="46">%s</text>`+"\n", lx, colour(s, false), lx+16, html.EscapeString(s))
		lx += 40 + 7*len(s)
	}
	panels := []struct {
		title string
		max   float64
		val   func(attackSample) float64
	}{
		{"server RSS, MiB", maxRSS, func(s attackSample) float64 { return mb(s.RSS) }},
		{"hostile connections still open", maxOpen, func(s attackSample) float64 { return float64(s.HostileOpen) }},
	}
	for pi, p := range panels {
		top := tops[pi]
		y := func(v float64) float64 { return float64(top) + panelH*(1-v/p.max) }
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="13" font-weight="bold">%s</text>`+"\n", left, top-8, p.title)
		for i := 0; i <= 4; i++ {
			v := p.max * float64(i) / 4
			fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#e0e0e0"/><text x="%d" y="%.1f" text-anchor="end" fill="#444">%s</text>`+"\n",
				left, width-right, y(v), y(v), left-6, y(v)+4, strings.TrimSuffix(fmt.Sprintf("%.1f", v), ".0"))
		}
		for i := 0; i <= 10; i++ {
			t := maxT * float64(i) / 10
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle" fill="#444">%.0f</text>`+"\n", x(t), top+panelH+16, t)
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">seconds since the first hostile connection</text>`+"\n", width-right, top+panelH+32)
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="black"/>`+"\n", left, width-right, top+panelH, top+panelH)
		for _, s := range servers {
			pts := byServer[s]
			slices.SortFunc(pts, func(a, b attackSample) int { return cmp.Compare(a.T, b.T) })
			var path strings.Builder
			for i, q := range pts {
				op := "L"
				if i == 0 {
					op = "M"
				}
				fmt.Fprintf(&path, "%s%.1f,%.1f ", op, x(q.T), y(p.val(q)))
			}
			fmt.Fprintf(&b, `<path d="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.TrimSpace(path.String()), colour(s, false))
		}
	}
	b.WriteString("</svg>\n")
	return b.String()
}
