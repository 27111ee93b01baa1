package execute

import (
	"os"
	"time"
)

// capture reads one output pipe to EOF, keeping the first limit bytes.
// Bytes past the limit are read and dropped: the writer never blocks on a
// full pipe and ends on its own (or at the timeout), so its exit status
// stays meaningful instead of becoming SIGPIPE.
type capture struct {
	f         *os.File
	limit     int
	buf       []byte
	truncated bool
	done      chan struct{}
}

// startCapture starts the reader goroutine; wait joins it. A nil file
// captures nothing.
func startCapture(f *os.File, limit int) *capture {
	c := &capture{f: f, limit: limit, done: make(chan struct{})}
	if f == nil {
		close(c.done)
		return c
	}
	go c.read()
	return c
}

func (c *capture) read() {
	defer close(c.done)
	chunk := make([]byte, 32<<10)
	for {
		n, err := c.f.Read(chunk)
		if n > 0 {
			room := c.limit - len(c.buf)
			if n > room {
				c.truncated = true
				n = max(room, 0)
			}
			c.buf = append(c.buf, chunk[:n]...)
		}
		if err != nil {
			return // io.EOF, or the deadline set by wait
		}
	}
}

// wait joins the reader. All writers should be gone by now; if something
// still holds the pipe after grace, the read is cut off.
func (c *capture) wait(grace time.Duration) {
	if c.f == nil {
		return
	}
	select {
	case <-c.done:
	case <-time.After(grace):
		_ = c.f.SetReadDeadline(time.Now())
		<-c.done
	}
	c.f.Close()
}
