package sshdtest

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"
)

// TestDelayProxy: bytes go through unchanged, each exchange costs at least
// twice the delay, and each exchange is one turn.
func TestDelayProxy(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }() // echo
		}
	}()
	const delay = 30 * time.Millisecond
	p := NewDelayProxy(t, ln.Addr().String(), delay)
	c, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	for i, msg := range []string{"ping\n", "a longer line with more bytes\n", "x\n"} {
		start := time.Now()
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatal(err)
		}
		got, err := r.ReadString('\n')
		if err != nil || got != msg {
			t.Fatalf("echo %q: got %q, %v", msg, got, err)
		}
		if d := time.Since(start); d < 2*delay {
			t.Errorf("exchange %d took %v, less than the round trip %v", i, d, 2*delay)
		}
		if turns := p.Turns(); turns != int64(i+1) {
			t.Errorf("after %d exchanges: %d turns", i+1, turns)
		}
	}
	if p.Conns() != 1 {
		t.Errorf("conns %d", p.Conns())
	}
}
