package fakeapi

import (
	"encoding/json"
	"net/http"
	"time"
)

// rtClient is one realtime (SSE) connection.
type rtClient struct {
	id string
	// authID is the principal bound by the first subscribe ("" = anonymous,
	// also for a garbage token: such a client never gets events).
	authID  string
	authSet bool
	subs    map[string]bool
	frames  chan []byte
	drop    chan struct{}
	dropped bool
	// muted clients get no more events (fault injection).
	muted bool
	// lost counts frames dropped because the client's buffer was full or
	// the write failed.
	lost int
	// delivered counts event frames written to the stream.
	delivered int
}

// handleRealtimeConnect is GET /api/realtime: it sends the verbatim
// PB_CONNECT frame (no space after the colons) and then events, and ends the
// body cleanly after IdleTimeout without a message.
func (s *Server) handleRealtimeConnect(w http.ResponseWriter, r *http.Request) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		pbGeneric500(w)
		return
	}
	c := &rtClient{id: clientID(), subs: map[string]bool{}, frames: make(chan []byte, 256), drop: make(chan struct{})}
	s.mu.Lock()
	s.st.clients[c.id] = c
	s.notify()
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.st.clients, c.id)
		s.notify()
		s.mu.Unlock()
	}()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	connect, _ := json.Marshal(map[string]string{"clientId": c.id})
	if _, err := w.Write(frame(c.id, "PB_CONNECT", connect)); err != nil {
		return
	}
	flusher.Flush()
	idle := time.NewTimer(s.opts.IdleTimeout)
	defer idle.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-c.drop:
			return
		case <-idle.C:
			return
		case f := <-c.frames:
			// Counted before the write: once flushed, the client may read
			// the frame and ask for the counts before this goroutine runs
			// again, and a dequeued frame must show somewhere.
			s.mu.Lock()
			c.delivered++
			s.mu.Unlock()
			if _, err := w.Write(f); err != nil {
				s.mu.Lock()
				c.delivered--
				c.lost++
				s.mu.Unlock()
				return
			}
			flusher.Flush()
			idle.Reset(s.opts.IdleTimeout)
		}
	}
}

func frame(id, event string, data []byte) []byte {
	out := make([]byte, 0, len(id)+len(event)+len(data)+20)
	out = append(out, "id:"...)
	out = append(out, id...)
	out = append(out, "\nevent:"...)
	out = append(out, event...)
	out = append(out, "\ndata:"...)
	out = append(out, data...)
	return append(out, "\n\n"...)
}

// handleRealtimeSubscribe is POST /api/realtime. It answers 204 even for a
// garbage or missing token (that client then gets nothing), 404 for an
// unknown clientId and 403 when the authorization differs from the one of
// the client's first subscribe.
func (s *Server) handleRealtimeSubscribe(w http.ResponseWriter, r *http.Request) {
	var req struct {
		ClientID      string   `json:"clientId"`
		Subscriptions []string `json:"subscriptions"`
	}
	if err := decodeBody(r, &req); err != nil {
		writePB(w, http.StatusBadRequest, "An error occurred while loading the submitted data.", nil)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.st.clients[req.ClientID]
	if !ok {
		writePB(w, http.StatusNotFound, "Missing or invalid client id.", nil)
		return
	}
	p := s.authLocked(r)
	if c.authSet && c.authID != "" && c.authID != p.id {
		writePB(w, http.StatusForbidden, "The current and the previous request authorization don't match.", nil)
		return
	}
	c.authID, c.authSet = p.id, true
	c.subs = map[string]bool{}
	for _, sub := range req.Subscriptions {
		c.subs[sub] = true
	}
	s.notify()
	w.WriteHeader(http.StatusNoContent)
}

// emitLocked sends a record change to every subscribed client whose
// principal may see the record; every frame's id is the clientId.
func (s *Server) emitLocked(collection, action string, rec map[string]any) {
	data, err := json.Marshal(struct {
		Record map[string]any `json:"record"`
		Action string         `json:"action"`
	}{rec, action})
	if err != nil {
		return
	}
	for _, c := range s.st.clients {
		if c.muted || !c.subs[collection] || c.authID == "" {
			continue
		}
		if rec["agent_id"] != c.authID && rec["user_id"] != c.authID {
			continue
		}
		select {
		case c.frames <- frame(c.id, collection, data):
		default:
			c.lost++
		}
	}
}
