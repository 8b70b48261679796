package etcdtest

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Proxy forwards TCP to every member of a cluster and can cut the link,
// as a network partition does: a client that reaches etcd through it
// loses etcd at once, without the process noticing anything else.
type Proxy struct {
	mu        sync.Mutex
	cut       bool
	conns     map[net.Conn]struct{}
	endpoints []string
}

// Proxy starts one forwarder per member, closed when the test ends.
func (c *Cluster) Proxy(t testing.TB) *Proxy {
	t.Helper()
	p := &Proxy{conns: map[net.Conn]struct{}{}}
	for _, m := range c.Members {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.Close() })
		target := m.ClientURL[len("http://"):]
		p.endpoints = append(p.endpoints, "http://"+l.Addr().String())
		go p.serve(l, target)
	}
	t.Cleanup(p.Cut)
	return p
}

// Endpoints are the proxy's client URLs.
func (p *Proxy) Endpoints() []string { return p.endpoints }

// Cut drops every connection and refuses new ones until Restore.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for c := range p.conns {
		_ = c.Close()
	}
	clear(p.conns)
}

// Restore lets connections through again.
func (p *Proxy) Restore() {
	p.mu.Lock()
	p.cut = false
	p.mu.Unlock()
}

func (p *Proxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		for _, c := range cs {
			_ = c.Close()
		}
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *Proxy) serve(l net.Listener, target string) {
	for {
		in, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			out, err := net.Dial("tcp", target)
			if err != nil {
				_ = in.Close()
				return
			}
			if !p.track(in, out) {
				return
			}
			go func() { _, _ = io.Copy(out, in); _ = out.Close() }()
			_, _ = io.Copy(in, out)
			_ = in.Close()
		}()
	}
}
