package store

import "context"

// ExecRaw runs a statement as the store's database user; tests use it to
// tamper with rows the way a database superuser could.
func (s *Store) ExecRawForTest(ctx context.Context, sql string, args ...any) error {
	return s.db.WithContext(ctx).Exec(sql, args...).Error
}
