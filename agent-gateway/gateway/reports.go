package gateway

import (
	"context"

	"github.com/viworks/backend-agent/pkg/bus"
	"github.com/viworks/backend-agent/pkg/store"
)

// report is what a session hands the reports group: an ACK's or a
// COMMAND_RESULT's write (exactly one of the two is set).
type report struct {
	ack    *store.Ack
	result *store.Result
}

// reportWriters is how many group commits of reports may be in flight at once.
const reportWriters = 4

// newReports returns the group that writes acks and results. A session waits
// for its result's outcome before it sends RESULT_ACK, so a RESULT_ACK is only
// ever sent for a durable result.
func (g *Gateway) newReports() *group[report, store.ResultOutcome] {
	return newGroup("report", reportWriters, g.recordReports, g.log, g.metrics.batchSize, nil)
}

// recordReports writes one batch of acks and results in one transaction and
// returns each report's outcome (the zero outcome for acks). Then it wakes the
// schedulers once for the batch: finished work frees capacity.
func (g *Gateway) recordReports(ctx context.Context, rs []report) ([]store.ResultOutcome, error) {
	var b store.Batch
	for _, r := range rs {
		if r.ack != nil {
			b.Acks = append(b.Acks, *r.ack)
		}
		if r.result != nil {
			b.Results = append(b.Results, *r.result)
		}
	}
	out, err := g.store.RecordBatch(ctx, b)
	if err != nil {
		return nil, err
	}
	if out.RefreshErr != nil {
		// The results are durable; the schedulers' sweep repairs the aggregate.
		g.log.WithError(out.RefreshErr).Warn("updating command status after results failed")
	}
	// The execution.status events of the batch are the store's to publish
	// (its observer, in commit order with the command changes they cause).
	outcomes := make([]store.ResultOutcome, len(rs))
	var recorded []string
	i := 0
	for k, r := range rs {
		if r.result == nil {
			continue
		}
		outcomes[k] = out.Results[i]
		i++
		if outcomes[k].Recorded {
			recorded = append(recorded, outcomes[k].CommandID)
		}
	}
	if len(recorded) > 0 {
		g.send.Wake(ctx, bus.Wake{Reason: bus.WakeResult, CommandIDs: recorded})
	}
	return outcomes, nil
}
