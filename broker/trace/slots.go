package trace

import "sync"

// Slots counts traces in progress against a limit that can change; a
// trace beyond it is refused at once rather than queued.
type Slots struct {
	mu    sync.Mutex
	used  int
	limit int
}

// NewSlots returns a counter that admits limit traces at once.
func NewSlots(limit int) *Slots { return &Slots{limit: limit} }

// SetLimit changes the limit; traces in progress keep their slots.
func (s *Slots) SetLimit(limit int) {
	s.mu.Lock()
	s.limit = limit
	s.mu.Unlock()
}

func (s *Slots) tryAcquire() (limit int, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.used >= s.limit {
		return s.limit, false
	}
	s.used++
	return s.limit, true
}

func (s *Slots) release() {
	s.mu.Lock()
	s.used--
	s.mu.Unlock()
}

// InUse reports how many traces hold a slot.
func (s *Slots) InUse() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used
}
