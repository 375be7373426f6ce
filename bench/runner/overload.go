package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// overloadResult is an open-loop run past the API's capacity.
type overloadResult struct {
	capacity   float64       // req/s the api scenario measured (closed loop)
	rate       float64       // req/s offered: each request on its own schedule
	dur        time.Duration // of the schedule
	planned    int64         // requests the schedule holds
	sent       int64         // requests started
	notSent    int64         // not started: the generator's in-flight cap was reached
	lagP99     time.Duration // start − scheduled time, p99 (the generator keeping up)
	endLag     time.Duration // how late the last request started
	ok         int64         // 2xx
	shedRA     int64         // 503 with Retry-After
	shed       int64         // 503 without Retry-After
	other      int64         // any other status
	timeouts   int64         // no answer within the client timeout
	errs       int64         // connection errors
	okP99      time.Duration // latency of the 2xx from their scheduled time
	goodput    float64       // 2xx/s over the schedule
	otherCodes map[int]int64
}

// offered tells whether the generator offered the whole schedule: every
// request started and the last no later than 5% of the run behind.
func (o overloadResult) offered() bool {
	return o.planned > 0 && o.sent == o.planned && o.endLag <= o.dur/20
}

// overloadTimeout is the client's timeout per request: a request not
// answered by then is abandoned (and counted as a client timeout).
const overloadTimeout = 2 * time.Second

// overloadMaxInFlight bounds the generator's requests in flight (its sockets);
// a request due beyond it is not sent and the scenario fails.
const overloadMaxInFlight = 8000

// arrival is the scheduled start of request i at rate per second.
func arrival(i int64, rate float64) time.Duration {
	return time.Duration(float64(i) * float64(time.Second) / rate)
}

// openLoop sends GETs of u at a constant rate for dur, each request on its
// own schedule (start + i/rate) whatever the earlier ones do, like vegeta.
func openLoop(ctx context.Context, u string, hdr http.Header, rate float64, dur time.Duration) (overloadResult, error) {
	res := overloadResult{rate: rate, dur: dur, planned: int64(rate * dur.Seconds()), otherCodes: map[int]int64{}}
	if res.planned <= 0 {
		return res, errors.New("overload: nothing to send")
	}
	tr := &http.Transport{MaxIdleConnsPerHost: overloadMaxInFlight, DisableCompression: true,
		DialContext: (&net.Dialer{Timeout: overloadTimeout}).DialContext}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: overloadTimeout}
	var (
		inflight                                    atomic.Int64
		ok, shedRA, shed, other, timeouts, errCount atomic.Int64
		mu                                          sync.Mutex
		okLat                                       []time.Duration
		codes                                       = map[int]int64{}
		wg                                          sync.WaitGroup
	)
	lags := make([]time.Duration, 0, res.planned)
	start := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for i := range res.planned {
		due := start.Add(arrival(i, rate))
		if wait := time.Until(due); wait > time.Millisecond {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-ctx.Done():
				return res, ctx.Err()
			}
		}
		if inflight.Load() >= overloadMaxInFlight {
			res.notSent++
			continue
		}
		now := time.Now()
		lags = append(lags, max(0, now.Sub(due)))
		res.endLag = max(0, now.Sub(due))
		res.sent++
		inflight.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer inflight.Add(-1)
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
			req.Header = hdr
			resp, err := client.Do(req)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					timeouts.Add(1)
				} else {
					errCount.Add(1)
				}
				return
			}
			_, err = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			lat := time.Since(due)
			switch {
			case err != nil:
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					timeouts.Add(1)
				} else {
					errCount.Add(1)
				}
			case resp.StatusCode >= 200 && resp.StatusCode < 300:
				ok.Add(1)
				mu.Lock()
				okLat = append(okLat, lat)
				mu.Unlock()
			case resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "":
				shedRA.Add(1)
			case resp.StatusCode == http.StatusServiceUnavailable:
				shed.Add(1)
			default:
				other.Add(1)
				mu.Lock()
				codes[resp.StatusCode]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	res.ok, res.shedRA, res.shed, res.other, res.timeouts, res.errs = ok.Load(), shedRA.Load(), shed.Load(), other.Load(), timeouts.Load(), errCount.Load()
	res.otherCodes = codes
	res.lagP99, res.okP99 = percentile(lags, 0.99), percentile(okLat, 0.99)
	res.goodput = float64(res.ok) / dur.Seconds()
	return res, ctx.Err()
}

// overloadFor is how long the overload scenario offers its load.
func overloadFor(quick bool) time.Duration {
	if quick {
		return 3 * time.Second
	}
	return 20 * time.Second
}

// overload offers twice the capacity the api scenario measured, open loop.
func (r *run) overload(ctx context.Context, m *measured) error {
	capacity := m.api.real.reqPS
	rate, dur := 2*capacity, overloadFor(r.cfg.Quick)
	r.progress("overload: %.0f req/s (2× the measured %.0f) open loop for %s against GET %s", rate, capacity, dur, apiPath)
	hdr := http.Header{"Authorization": {"Bearer " + r.sys.token}}
	res, err := openLoop(ctx, r.sys.api+apiPath, hdr, rate, dur)
	if err != nil {
		return fmt.Errorf("overload: %w", err)
	}
	res.capacity = capacity
	r.progress("overload: %d of %d sent (p99 start lag %s), %d 2xx, %d 503 with Retry-After, %d 503 without, %d other, %d client timeouts, %d errors",
		res.sent, res.planned, ms(res.lagP99), res.ok, res.shedRA, res.shed, res.other, res.timeouts, res.errs)
	m.overload = res
	return nil
}

// overloadRows are the overload scenario's rows.
func overloadRows(o overloadResult) []Row {
	if !o.offered() {
		return []Row{{"overload", fmt.Sprintf("generator offered only %d of %d requests (%d not sent at %d in flight, last %s late)",
			o.sent, o.planned, o.notSent, overloadMaxInFlight, ms(o.endLag)), fmt.Sprintf("%.0f req/s for %s", o.rate, o.dur), "", "",
			fmt.Sprintf("NO: offered only %d of %d", o.sent, o.planned)}}
	}
	return []Row{
		{"overload", fmt.Sprintf("goodput %.0f 2xx/s at %.0f req/s offered (2× capacity, open loop, %s)", o.goodput, o.rate, o.dur), "≥ 90% of capacity",
			fmt.Sprintf("capacity (api scenario) %.0f req/s", o.capacity), ratio(o.goodput, o.capacity), met(o.goodput >= 0.9*o.capacity)},
		{"overload", "p99 of admitted (2xx) " + ms(o.okP99) + " from scheduled start", "≤ 50 ms", "", "", met(o.ok > 0 && o.okP99 <= 50*time.Millisecond)},
		{"overload", fmt.Sprintf("503 + Retry-After %d, 503 without %d, other %d, client timeouts %d, errors %d", o.shedRA, o.shed, o.other, o.timeouts, o.errs), "", "", "", ""},
	}
}
