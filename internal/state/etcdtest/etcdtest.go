// Package etcdtest starts a real etcd cluster for tests: three members
// (Debian's etcd-server, or ROTATORD_ETCD_BIN) on loopback with free ports
// and temporary data directories. A test that needs it skips when no etcd
// binary is installed, and fails instead when CI=true, where .ci/run
// installs one.
package etcdtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

func nopLogger() *zap.Logger { return zap.NewNop() }

// DefaultMaxTxnOps is the --max-txn-ops a cluster runs with unless
// Config says otherwise: etcd's own default, so that tests of the daemon
// meet the limit a production cluster has.
const DefaultMaxTxnOps = 128

// Config shapes a test cluster.
type Config struct {
	Members   int // default 3
	MaxTxnOps int // default DefaultMaxTxnOps
	// Disk keeps the data on the test's temporary directory (a disk,
	// fsync and all) rather than on tmpfs: for benchmarks that compare
	// with bbolt on disk.
	Disk bool
}

// Binary returns the etcd binary to run: $ROTATORD_ETCD_BIN, else etcd on
// PATH, else /usr/bin/etcd. It skips t when there is none, or fails it
// when CI=true.
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("ROTATORD_ETCD_BIN"); p != "" {
		return p
	}
	if p, err := exec.LookPath("etcd"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/bin/etcd"); err == nil {
		return "/usr/bin/etcd"
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no etcd binary (apt-get install etcd-server, or set ROTATORD_ETCD_BIN); CI must run the etcd tests")
	}
	t.Skip("no etcd binary (apt-get install etcd-server, or set ROTATORD_ETCD_BIN)")
	return ""
}

// Cluster is a running etcd cluster.
type Cluster struct {
	t       testing.TB
	bin     string
	Members []*Member
	// MaxTxnOps is the cluster's --max-txn-ops.
	MaxTxnOps int
}

// Member is one etcd process.
type Member struct {
	Name      string
	ClientURL string
	PeerURL   string
	dir       string
	args      []string
	log       *os.File

	mu  sync.Mutex
	cmd *exec.Cmd
	// exited is closed when the current process has been waited for.
	exited chan struct{}
}

// Start starts an n-member cluster and waits until it answers. The
// members are killed when the test ends.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	return StartWith(t, Config{Members: n})
}

// StartWith starts a cluster shaped by cfg.
func StartWith(t testing.TB, cfg Config) *Cluster {
	t.Helper()
	n := cfg.Members
	if n <= 0 {
		n = 3
	}
	if cfg.MaxTxnOps <= 0 {
		cfg.MaxTxnOps = DefaultMaxTxnOps
	}
	bin := Binary(t)
	root := t.TempDir()
	if !cfg.Disk {
		root = tempRoot(t)
	}
	c := &Cluster{t: t, bin: bin, MaxTxnOps: cfg.MaxTxnOps}
	var initial []string
	for i := range n {
		cport, pport := FreePort(t), FreePort(t)
		m := &Member{
			Name:      fmt.Sprintf("m%d", i),
			ClientURL: fmt.Sprintf("http://127.0.0.1:%d", cport),
			PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", pport),
			dir:       filepath.Join(root, fmt.Sprintf("m%d", i)),
		}
		c.Members = append(c.Members, m)
		initial = append(initial, m.Name+"="+m.PeerURL)
	}
	for _, m := range c.Members {
		m.args = []string{
			"--name", m.Name,
			"--data-dir", m.dir,
			"--listen-client-urls", m.ClientURL,
			"--advertise-client-urls", m.ClientURL,
			"--listen-peer-urls", m.PeerURL,
			"--initial-advertise-peer-urls", m.PeerURL,
			"--initial-cluster", strings.Join(initial, ","),
			"--initial-cluster-state", "new",
			"--initial-cluster-token", filepath.Base(root),
			"--max-txn-ops", fmt.Sprint(cfg.MaxTxnOps),
			"--log-level", "warn",
			"--logger", "zap",
		}
		log, err := os.Create(filepath.Join(root, m.Name+".log"))
		if err != nil {
			t.Fatal(err)
		}
		m.log = log
		if err := c.start(m); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, m := range c.Members {
			m.Kill()
			_ = m.log.Close()
		}
		if t.Failed() {
			for _, m := range c.Members {
				if b, err := os.ReadFile(m.log.Name()); err == nil && len(b) > 0 {
					t.Logf("etcd %s log (tail):\n%s", m.Name, tail(string(b), 3000))
				}
			}
		}
	})
	c.WaitHealthy(t, 30*time.Second)
	return c
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// tempRoot is a fresh directory for the members' data: on tmpfs when the
// machine has one, since fsync there is free and the tests are not about
// disks.
func tempRoot(t testing.TB) string {
	t.Helper()
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if d, err := os.MkdirTemp("/dev/shm", "rotatord-etcd-"); err == nil {
			t.Cleanup(func() { _ = os.RemoveAll(d) })
			return d
		}
	}
	return t.TempDir()
}

// FreePort returns a TCP port on 127.0.0.1 that nothing listened on a
// moment ago: for a member's ports, and for tests that give a process one.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (c *Cluster) start(m *Member) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil {
		return fmt.Errorf("etcd %s already runs", m.Name)
	}
	cmd := exec.Command(c.bin, m.args...)
	cmd.Stdout, cmd.Stderr = m.log, m.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start etcd %s: %w", m.Name, err)
	}
	m.cmd = cmd
	exited := make(chan struct{})
	m.exited = exited
	go func() { _ = cmd.Wait(); close(exited) }()
	return nil
}

// Endpoints returns every member's client URL.
func (c *Cluster) Endpoints() []string {
	out := make([]string, len(c.Members))
	for i, m := range c.Members {
		out[i] = m.ClientURL
	}
	return out
}

// Client returns a client of every member, closed when the test ends.
func (c *Cluster) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second, Logger: nopLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// WaitHealthy waits until a quorum answers a linearizable read.
func (c *Cluster) WaitHealthy(t testing.TB, timeout time.Duration) {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 2 * time.Second, Logger: nopLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, last = cli.Get(ctx, "health")
		cancel()
		if last == nil {
			return
		}
		time.Sleep(50 * time.Millisecond) // poll interval, not a condition
	}
	t.Fatalf("etcd cluster not healthy after %s: %v", timeout, last)
}

// Stop stops m gracefully (SIGTERM) and waits for it to exit.
func (c *Cluster) Stop(m *Member) { m.signal(syscall.SIGTERM) }

// Kill kills m (SIGKILL) and waits for it to exit.
func (m *Member) Kill() { m.signal(syscall.SIGKILL) }

func (m *Member) signal(sig syscall.Signal) {
	m.mu.Lock()
	cmd, exited := m.cmd, m.exited
	m.cmd = nil
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}

// Restart starts a stopped member again on its data directory.
func (c *Cluster) Restart(t testing.TB, m *Member) {
	t.Helper()
	if err := c.start(m); err != nil {
		t.Fatal(err)
	}
}
