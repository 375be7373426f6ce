package runner

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"math"
	"sort"
	"time"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// Chart colours.
var (
	black = color.RGBA{0, 0, 0, 255}
	grey  = color.RGBA{215, 215, 215, 255}
	blue  = color.RGBA{31, 96, 180, 255}
	red   = color.RGBA{200, 40, 40, 255}
	green = color.RGBA{30, 140, 60, 255}
)

// latencyChart draws the cumulative distribution of the latency scenario's
// samples (POST → succeeded) as a PNG, with the p50/p99 targets marked.
func latencyChart(w io.Writer, samples []time.Duration, title string) error {
	if len(samples) == 0 {
		return fmt.Errorf("latency chart: no samples")
	}
	const width, height = 900, 540
	const left, right, top, bottom = 80, 30, 50, 60
	img := image.NewRGBA(image.Rect(0, 0, width, height))
	draw.Draw(img, img.Bounds(), &image.Uniform{color.White}, image.Point{}, draw.Src)

	s := append([]time.Duration(nil), samples...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	msOf := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	// The x axis reaches past the p99.9 sample and the 20 ms target, so the
	// curve and both targets are visible; slower samples are counted.
	xmax, step := niceAxis(math.Max(msOf(s[int(0.999*float64(len(s)-1))])*1.1, 22))
	plotW, plotH := width-left-right, height-top-bottom
	px := func(v float64) int { return left + int(math.Round(v/xmax*float64(plotW))) }
	py := func(f float64) int { return top + plotH - int(math.Round(f*float64(plotH))) }

	// Grid and axis ticks.
	for v := 0.0; v <= xmax+1e-9; v += step {
		x := px(v)
		vline(img, x, top, top+plotH, grey)
		label := fmt.Sprintf("%g", v)
		text(img, x-len(label)*7/2, top+plotH+18, label, black)
	}
	for f := 0.0; f <= 1.0001; f += 0.1 {
		y := py(f)
		hline(img, left, left+plotW, y, grey)
		label := fmt.Sprintf("%3.0f%%", f*100)
		text(img, left-len(label)*7-6, y+4, label, black)
	}
	hline(img, left, left+plotW, top+plotH, black)
	vline(img, left, top, top+plotH, black)

	// Targets: p50 ≤ 5 ms at 50%, p99 ≤ 20 ms at 99%.
	for _, t := range []struct {
		ms   float64
		name string
	}{{5, "target p50 <= 5 ms"}, {20, "target p99 <= 20 ms"}} {
		x := px(t.ms)
		dashedV(img, x, top, top+plotH, red)
		boxedText(img, x+4, py(0.04), t.name, red)
	}

	// The CDF as a step line.
	prevX, prevY := px(0), py(0)
	beyond := 0
	for i, d := range s {
		v := msOf(d)
		if v > xmax {
			beyond = len(s) - i
			break
		}
		x, y := px(v), py(float64(i+1)/float64(len(s)))
		thickLine(img, prevX, prevY, x, prevY, blue)
		thickLine(img, x, prevY, x, y, blue)
		prevX, prevY = x, y
	}
	if beyond == 0 {
		thickLine(img, prevX, prevY, left+plotW, prevY, blue)
	}

	p50, p99 := percentile(s, 0.5), percentile(s, 0.99)
	for _, m := range []struct {
		d    time.Duration
		frac float64
		name string
	}{{p50, 0.5, "p50"}, {p99, 0.99, "p99"}} {
		if v := msOf(m.d); v <= xmax {
			x, y := px(v), py(m.frac)
			fillRect(img, x-3, y-3, x+3, y+3, green)
			boxedText(img, x+8, y+16, fmt.Sprintf("%s %.2f ms", m.name, v), green)
		}
	}

	text(img, left, 22, title, black)
	sub := fmt.Sprintf("%d samples, min %.2f ms, max %.2f ms", len(s), msOf(s[0]), msOf(s[len(s)-1]))
	if beyond > 0 {
		sub += fmt.Sprintf(", %d beyond the axis", beyond)
	}
	text(img, left, 38, sub, black)
	xl := "milliseconds from POST /api/v1/commands to the result recorded"
	text(img, left+plotW/2-len(xl)*7/2, height-14, xl, black)
	verticalText(img, 14, top+plotH/2, "share of commands at or below", black)
	return png.Encode(w, img)
}

// niceAxis rounds max up to 1, 2 or 5 × a power of ten times a whole number of
// steps, about eight of them.
func niceAxis(max float64) (float64, float64) {
	raw := max / 8
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, m := range []float64{1, 2, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	return math.Ceil(max/step) * step, step
}

func text(img draw.Image, x, y int, s string, c color.Color) {
	d := font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(s)
}

// boxedText draws s on a white box, readable over grid and curve.
func boxedText(img *image.RGBA, x, y int, s string, c color.Color) {
	fillRect(img, x-2, y-11, x+len(s)*7+1, y+3, color.White)
	text(img, x, y, s, c)
}

// verticalText draws s rotated 90° counter-clockwise, centred on (x, cy).
func verticalText(img *image.RGBA, x, cy int, s string, c color.Color) {
	w := len(s) * 7
	tmp := image.NewRGBA(image.Rect(0, 0, w, 13))
	text(tmp, 0, 10, s, c)
	for ty := range 13 {
		for tx := range w {
			if _, _, _, a := tmp.At(tx, ty).RGBA(); a > 0 {
				img.Set(x+ty, cy+w/2-tx, tmp.At(tx, ty))
			}
		}
	}
}

func hline(img *image.RGBA, x0, x1, y int, c color.Color) {
	for x := x0; x <= x1; x++ {
		img.Set(x, y, c)
	}
}

func vline(img *image.RGBA, x, y0, y1 int, c color.Color) {
	for y := y0; y <= y1; y++ {
		img.Set(x, y, c)
	}
}

func dashedV(img *image.RGBA, x, y0, y1 int, c color.Color) {
	for y := y0; y <= y1; y++ {
		if (y/6)%2 == 0 {
			img.Set(x, y, c)
		}
	}
}

func fillRect(img *image.RGBA, x0, y0, x1, y1 int, c color.Color) {
	draw.Draw(img, image.Rect(x0, y0, x1+1, y1+1), image.NewUniform(c), image.Point{}, draw.Src)
}

// thickLine draws an axis-parallel segment two pixels wide.
func thickLine(img *image.RGBA, x0, y0, x1, y1 int, c color.Color) {
	if x0 > x1 {
		x0, x1 = x1, x0
	}
	if y0 > y1 {
		y0, y1 = y1, y0
	}
	fillRect(img, x0, y0, x1+1, y1+1, c)
}
