package sim

import (
	"math/rand/v2"
	"sync"
)

// Telemetry produces plausible, slowly drifting host metrics for one
// simulated agent. Counters (net_rx_bytes, net_tx_bytes) only grow.
type Telemetry struct {
	mu                sync.Mutex
	rng               *rand.Rand
	cpus              float64
	memTotal          float64
	cpu, mem, disk    float64
	load1, load5, l15 float64
	rx, tx            float64
}

// NewTelemetry returns a generator seeded with seed, so a given agent index
// always gets the same kind of machine.
func NewTelemetry(seed uint64) *Telemetry {
	rng := rand.New(rand.NewPCG(seed, 0x5eed)) //nolint:gosec // G404: simulated telemetry, not a secret
	cpus := float64([]int{2, 4, 8, 16}[rng.IntN(4)])
	t := &Telemetry{
		rng:      rng,
		cpus:     cpus,
		memTotal: float64([]int{4, 8, 16, 32}[rng.IntN(4)]) * (1 << 30),
		cpu:      5 + rng.Float64()*30,
		mem:      20 + rng.Float64()*40,
		disk:     10 + rng.Float64()*60,
		rx:       float64(rng.Int64N(1 << 30)),
		tx:       float64(rng.Int64N(1 << 30)),
	}
	t.load1 = cpus * t.cpu / 100
	t.load5, t.l15 = t.load1, t.load1
	return t
}

// Sample advances the simulated machine one step and returns its metrics.
func (t *Telemetry) Sample() map[string]float64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.rng
	t.cpu = clamp(t.cpu+r.NormFloat64()*5, 0.5, 99.5)
	t.mem = clamp(t.mem+r.NormFloat64()*1.5, 5, 97)
	t.disk = clamp(t.disk+r.Float64()*0.05-0.01, 1, 99)
	t.load1 = clamp(t.cpus*t.cpu/100+r.NormFloat64()*0.2, 0, 4*t.cpus)
	t.load5 += (t.load1 - t.load5) / 5
	t.l15 += (t.load1 - t.l15) / 15
	t.rx += float64(r.Int64N(2 << 20))
	t.tx += float64(r.Int64N(1 << 20))
	return map[string]float64{
		"cpu_percent":    round2(t.cpu),
		"mem_percent":    round2(t.mem),
		"mem_used_bytes": float64(int64(t.memTotal * t.mem / 100)),
		"disk_percent":   round2(t.disk),
		"load1":          round2(t.load1),
		"load5":          round2(t.load5),
		"load15":         round2(t.l15),
		"net_rx_bytes":   t.rx,
		"net_tx_bytes":   t.tx,
	}
}

func clamp(v, lo, hi float64) float64 { return min(max(v, lo), hi) }

func round2(v float64) float64 { return float64(int64(v*100+0.5)) / 100 }
