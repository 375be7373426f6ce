package store

import (
	"context"
	"slices"
)

// AllScheduleRunsForTest returns every run of a schedule, oldest due time first.
func (s *Store) AllScheduleRunsForTest(ctx context.Context, id string) ([]Command, error) {
	runs, err := s.scheduleRuns(s.db.WithContext(ctx), id, 100000)
	slices.Reverse(runs)
	return runs, err
}
