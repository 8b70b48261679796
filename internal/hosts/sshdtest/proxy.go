package sshdtest

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// DelayProxy is a TCP proxy on loopback that delivers every chunk it
// forwards, in each direction, delay after it arrived. With delay 10ms a
// request-reply exchange costs 20ms more than without it: a WAN round trip.
// Chunks are delayed, not serialised behind each other, so throughput is
// unchanged and pipelined requests overlap as they would on a real link.
//
// It also counts round trips: a turn is a chunk from the server that
// arrives after a chunk from the client, on the same connection, with
// nothing from the server in between. That is the number of times a client
// waiting for answers pays the delay twice.
type DelayProxy struct {
	// Addr is where clients connect: "127.0.0.1:PORT".
	Addr string

	target string
	delay  time.Duration
	ln     net.Listener
	wg     sync.WaitGroup
	turns  atomic.Int64
	conns  atomic.Int64

	mu     sync.Mutex
	open   map[net.Conn]bool
	closed bool
}

// NewDelayProxy listens on a free loopback port and forwards to target. It
// closes with the test.
func NewDelayProxy(t testing.TB, target string, delay time.Duration) *DelayProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("sshdtest: proxy listen: %v", err)
	}
	p := &DelayProxy{Addr: ln.Addr().String(), target: target, delay: delay, ln: ln, open: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.Close)
	return p
}

// Port is the proxy's port.
func (p *DelayProxy) Port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// Turns is the number of round trips seen so far, over all connections.
func (p *DelayProxy) Turns() int64 { return p.turns.Load() }

// Conns is the number of connections accepted so far.
func (p *DelayProxy) Conns() int64 { return p.conns.Load() }

// Close stops accepting, cuts every open connection and waits for the
// goroutines to end.
func (p *DelayProxy) Close() {
	p.ln.Close()
	p.mu.Lock()
	p.closed = true
	for c := range p.open {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *DelayProxy) track(c net.Conn, on bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on && p.closed {
		return false
	}
	if on {
		p.open[c] = true
	} else {
		delete(p.open, c)
	}
	return true
}

func (p *DelayProxy) serve() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.conns.Add(1)
		p.wg.Add(1)
		go p.handle(client)
	}
}

// direction of a chunk, for turn counting.
const (
	fromClient int32 = 1
	fromServer int32 = 2
)

func (p *DelayProxy) handle(client net.Conn) {
	defer p.wg.Done()
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		client.Close()
		return
	}
	if !p.track(client, true) || !p.track(server, true) {
		client.Close()
		server.Close()
		return
	}
	defer func() {
		p.track(client, false)
		p.track(server, false)
		client.Close()
		server.Close()
	}()
	var last atomic.Int32
	var done sync.WaitGroup
	done.Add(2)
	go func() { defer done.Done(); p.pump(server, client, fromClient, &last) }()
	go func() { defer done.Done(); p.pump(client, server, fromServer, &last) }()
	done.Wait()
}

type chunk struct {
	data []byte
	due  time.Time
}

// pump copies src to dst, each chunk delay after it was read. When src
// ends, the rest is delivered and dst's write side closed; when dst fails,
// both ends are closed so the other pump ends too.
func (p *DelayProxy) pump(dst, src net.Conn, dir int32, last *atomic.Int32) {
	queue := make(chan chunk, 4096)
	var w sync.WaitGroup
	w.Add(1)
	go func() {
		defer w.Done()
		failed := false
		for c := range queue {
			if failed {
				continue
			}
			time.Sleep(time.Until(c.due))
			if _, err := dst.Write(c.data); err != nil {
				failed = true
				dst.Close()
				src.Close()
			}
		}
		if tc, ok := dst.(*net.TCPConn); ok && !failed {
			_ = tc.CloseWrite()
		}
	}()
	for {
		buf := make([]byte, 32<<10)
		n, err := src.Read(buf)
		if n > 0 {
			if prev := last.Swap(dir); dir == fromServer && prev == fromClient {
				p.turns.Add(1)
			}
			queue <- chunk{data: buf[:n], due: time.Now().Add(p.delay)}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				src.Close()
			}
			break
		}
	}
	close(queue)
	w.Wait()
}
