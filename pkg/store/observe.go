package store

import "context"

// CommandChange is a command's new aggregate status.
type CommandChange struct {
	CommandID string
	Status    string
}

// ObserveCommands registers fn, called after every commit that changed the
// aggregate status of commands (results, sweeps, cancels, dispatch), with the
// new statuses; the roles publish them as events. Register it before the store
// is used; fn must not block for long.
func (s *Store) ObserveCommands(fn func(ctx context.Context, changes []CommandChange)) {
	s.observe = fn
}

func (s *Store) notify(ctx context.Context, changes []CommandChange) {
	if s.observe != nil && len(changes) > 0 {
		s.observe(context.WithoutCancel(ctx), changes)
	}
}
