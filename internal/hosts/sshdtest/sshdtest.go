// Package sshdtest runs a real OpenSSH sshd on loopback that stands for
// many "hosts", for tests of code that edits authorized_keys over SSH.
//
// Each host is one port with its own home directory and authorized_keys
// file: sshd listens on every port and a "Match LocalPort" block per port
// names that host's AuthorizedKeysFile and forces an in-process SFTP server
// whose start directory (internal-sftp -d) is the host's home. A client
// therefore sees the usual layout: the relative path .ssh/authorized_keys
// over SFTP is the very file sshd checks keys against, as on a real
// machine. Because that file lives outside the login user's real home, the
// server runs with StrictModes no (the temporary directory is world
// writable, which StrictModes would reject).
//
// sshd accepts at most 16 listening sockets, so hosts are spread over as
// many sshd processes as needed (one per 16 hosts and per host key). The
// login user is the current user; as root, sshd needs its privilege
// separation directory /run/sshd, which Start creates when missing (as
// Debian's systemd unit would), and PermitRootLogin prohibit-password lets
// root in by key only.
package sshdtest

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// DefaultBinary is where Debian's openssh-server installs sshd.
const DefaultBinary = "/usr/sbin/sshd"

// maxListen is sshd's MAX_LISTEN_SOCKS.
const maxListen = 16

// Binary returns the sshd to run: $ROTATORD_SSHD_BIN, else DefaultBinary.
// sshd must be run by absolute path (it re-executes itself).
func Binary() (string, bool) {
	p := os.Getenv("ROTATORD_SSHD_BIN")
	if p == "" {
		p = DefaultBinary
	}
	if !filepath.IsAbs(p) {
		return p, false
	}
	fi, err := os.Stat(p)
	return p, err == nil && fi.Mode().IsRegular()
}

// Require returns the sshd binary, skipping the test when it is missing,
// or failing it when CI=true (CI installs openssh-server, so a missing
// sshd there is a broken pipeline, not a reason to skip).
func Require(t testing.TB) string {
	t.Helper()
	p, ok := Binary()
	if ok {
		return p
	}
	msg := fmt.Sprintf("sshd not found at %s (install Debian's openssh-server, or set ROTATORD_SSHD_BIN)", p)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// Server is a set of hosts served by one or more sshd processes.
type Server struct {
	t       testing.TB
	bin     string
	dir     string
	user    string
	version [2]int

	mu    sync.Mutex
	hosts []*Host
	procs []*proc
	gen   int // restarts, to name config and log files
}

// Host is one simulated machine.
type Host struct {
	// Index is the host's position in Server.Hosts.
	Index int
	// Port is the loopback port its sshd listens on.
	Port int
	// User is the login user (the user running the test).
	User string
	// Home is the directory the SFTP server starts in: the login user's
	// home as far as a client can tell.
	Home string
	// AuthorizedKeys is Home/.ssh/authorized_keys, the file sshd reads.
	// Neither it nor .ssh exists until a test creates them.
	AuthorizedKeys string

	s       *Server
	keyPath string
	hostKey ssh.PublicKey
	down    bool
}

type proc struct {
	cmd   *exec.Cmd
	done  chan struct{}
	ports []int
	log   string
}

// Start runs sshd for n hosts and stops it when the test ends. Every host
// gets the same host key until ChangeHostKey gives one its own.
func Start(t testing.TB, n int) *Server {
	t.Helper()
	bin := Require(t)
	if n < 1 {
		t.Fatalf("sshdtest: need at least one host, got %d", n)
	}
	u, err := user.Current()
	if err != nil {
		t.Fatalf("sshdtest: current user: %v", err)
	}
	if os.Geteuid() == 0 {
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			t.Fatalf("sshdtest: privilege separation directory: %v", err)
		}
	}
	dir := t.TempDir()
	if strings.ContainsAny(dir, " \t\"") {
		t.Fatalf("sshdtest: temporary directory %q has characters sshd_config cannot take", dir)
	}
	s := &Server{t: t, bin: bin, dir: dir, user: u.Username, version: sshdVersion(bin)}
	keyPath, pub := s.newHostKey("host_key")
	ports := freePorts(t, n)
	for i := range n {
		home := filepath.Join(dir, fmt.Sprintf("host%03d", i))
		if err := os.Mkdir(home, 0o755); err != nil {
			t.Fatalf("sshdtest: %v", err)
		}
		s.hosts = append(s.hosts, &Host{
			Index: i, Port: ports[i], User: u.Username, Home: home,
			AuthorizedKeys: filepath.Join(home, ".ssh", "authorized_keys"),
			s:              s, keyPath: keyPath, hostKey: pub,
		})
	}
	t.Cleanup(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.stopAll()
		if t.Failed() {
			t.Logf("sshd logs:\n%s", s.logsLocked())
		}
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	s.startAll()
	return s
}

// Hosts returns the hosts in index order.
func (s *Server) Hosts() []*Host { return s.hosts }

// Addr is the host's address for an SSH client: "127.0.0.1:PORT".
func (h *Host) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(h.Port)) }

// HostKey is the host key the host presents now.
func (h *Host) HostKey() ssh.PublicKey {
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	return h.hostKey
}

// KnownHostsLine is the host's line for an OpenSSH known_hosts file.
func (h *Host) KnownHostsLine() string {
	return fmt.Sprintf("[127.0.0.1]:%d %s", h.Port, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(h.HostKey()))))
}

// Login reports whether a fresh SSH connection authenticating with signer
// alone, and checking the host key, is accepted by the host.
func (h *Host) Login(signer ssh.Signer) error {
	cfg := &ssh.ClientConfig{
		User:            h.User,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.FixedHostKey(h.HostKey()),
		Timeout:         10 * time.Second,
	}
	c, err := ssh.Dial("tcp", h.Addr(), cfg)
	if err != nil {
		return err
	}
	return c.Close()
}

// WriteAuthorizedKeys creates .ssh (0700) and writes the host's
// authorized_keys with the given content and mode.
func (h *Host) WriteAuthorizedKeys(t testing.TB, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(h.AuthorizedKeys), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(h.AuthorizedKeys, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(h.AuthorizedKeys, mode); err != nil { // umask
		t.Fatal(err)
	}
}

// ReadAuthorizedKeys returns the host's authorized_keys.
func (h *Host) ReadAuthorizedKeys(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(h.AuthorizedKeys)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ChangeHostKey gives the host a new host key of its own, as a reinstalled
// machine (or a machine in the middle) would present, and restarts sshd.
func (s *Server) ChangeHostKey(h *Host) ssh.PublicKey {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	h.keyPath, h.hostKey = s.newHostKey(fmt.Sprintf("host_key_%03d_%d", h.Index, s.gen))
	s.restartLocked()
	return h.hostKey
}

// SetDown takes the host off the network (its port refuses connections)
// or brings it back, restarting sshd.
func (s *Server) SetDown(h *Host, down bool) {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	h.down = down
	s.restartLocked()
}

// Logs returns everything the sshd processes logged (LogLevel VERBOSE).
func (s *Server) Logs() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logsLocked()
}

func (s *Server) logsLocked() string {
	files, _ := filepath.Glob(filepath.Join(s.dir, "sshd_*.log"))
	var b strings.Builder
	for _, f := range files {
		data, _ := os.ReadFile(f)
		fmt.Fprintf(&b, "==> %s <==\n%s\n", filepath.Base(f), data)
	}
	return b.String()
}

func (s *Server) restartLocked() {
	s.t.Helper()
	s.stopAll()
	s.startAll()
}

// startAll starts one sshd per host key and per 16 hosts that are up, and
// waits until every port answers with an SSH banner.
func (s *Server) startAll() {
	s.t.Helper()
	groups := map[string][]*Host{}
	var order []string
	for _, h := range s.hosts {
		if h.down {
			continue
		}
		if _, ok := groups[h.keyPath]; !ok {
			order = append(order, h.keyPath)
		}
		groups[h.keyPath] = append(groups[h.keyPath], h)
	}
	s.gen++
	for _, key := range order {
		hs := groups[key]
		for len(hs) > 0 {
			n := min(len(hs), maxListen)
			s.procs = append(s.procs, s.startProc(key, hs[:n]))
			hs = hs[n:]
		}
	}
	for _, p := range s.procs {
		for _, port := range p.ports {
			s.waitReady(p, port)
		}
	}
}

func (s *Server) startProc(hostKey string, hosts []*Host) *proc {
	s.t.Helper()
	name := fmt.Sprintf("sshd_%03d_%02d", s.gen, len(s.procs))
	cfgPath := filepath.Join(s.dir, name+".conf")
	if err := os.WriteFile(cfgPath, []byte(s.config(hostKey, hosts)), 0o600); err != nil {
		s.t.Fatalf("sshdtest: %v", err)
	}
	logPath := filepath.Join(s.dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		s.t.Fatalf("sshdtest: %v", err)
	}
	defer logf.Close()
	args := []string{"-D", "-e", "-f", cfgPath}
	if s.version[0] > 0 && s.version[0]*100+s.version[1] < 908 {
		// No re-execution per connection: the same server, half the CPU
		// per login, which matters with hundreds of hosts on two cores.
		// (9.8 split the per-connection work into sshd-session; -r went.)
		args = append(args, "-r")
	}
	cmd := exec.Command(s.bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so stopping it never signals the test binary.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("sshdtest: start sshd: %v", err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{}), log: logPath}
	for _, h := range hosts {
		p.ports = append(p.ports, h.Port)
	}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p
}

// config is the sshd_config of one process.
func (s *Server) config(hostKey string, hosts []*Host) string {
	var b strings.Builder
	for _, h := range hosts {
		fmt.Fprintf(&b, "ListenAddress 127.0.0.1:%d\n", h.Port)
	}
	fmt.Fprintf(&b, `HostKey %s
PidFile none
UsePAM no
UseDNS no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
AuthorizedKeysFile none
Subsystem sftp internal-sftp
MaxStartups 1000
MaxAuthTries 6
LoginGraceTime 60
LogLevel VERBOSE
`, hostKey)
	if s.version[0] > 9 || (s.version[0] == 9 && s.version[1] >= 8) {
		// 9.8 penalises sources whose connections fail to authenticate,
		// which tests of refused keys do on purpose.
		b.WriteString("PerSourcePenalties no\n")
	}
	for _, h := range hosts {
		fmt.Fprintf(&b, "Match LocalPort %d\n\tAuthorizedKeysFile %s\n\tForceCommand internal-sftp -d %s\n",
			h.Port, h.AuthorizedKeys, h.Home)
	}
	return b.String()
}

// waitReady polls a port until sshd greets on it, the process dies, or ten
// seconds pass.
func (s *Server) waitReady(p *proc, port int) {
	s.t.Helper()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-p.done:
			log, _ := os.ReadFile(p.log)
			s.t.Fatalf("sshdtest: sshd exited before serving %s:\n%s", addr, log)
		default:
		}
		if banner(addr) {
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(p.log)
			s.t.Fatalf("sshdtest: sshd not serving %s after 10s:\n%s", addr, log)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// banner reports whether addr answers with an SSH identification string.
func banner(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "SSH-2.0-")
}

// stopAll stops every sshd and waits for it to exit, so its ports are free.
// Connections already accepted live on in their own processes until their
// clients hang up, as with a real sshd restart.
func (s *Server) stopAll() {
	for _, p := range s.procs {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	s.procs = nil
}

// newHostKey writes a fresh ed25519 host key (OpenSSH format, 0600).
func (s *Server) newHostKey(name string) (string, ssh.PublicKey) {
	s.t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		s.t.Fatalf("sshdtest: %v", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "sshdtest")
	if err != nil {
		s.t.Fatalf("sshdtest: %v", err)
	}
	path := filepath.Join(s.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		s.t.Fatalf("sshdtest: %v", err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		s.t.Fatalf("sshdtest: %v", err)
	}
	return path, sshPub
}

// freePorts reserves n distinct loopback ports by listening and closing.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("sshdtest: reserve port: %v", err)
		}
		ls = append(ls, l)
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports
}

// FreePort returns a loopback port nothing listens on, for an unreachable
// host.
func FreePort(t testing.TB) int { return freePorts(t, 1)[0] }

var versionRE = regexp.MustCompile(`OpenSSH_(\d+)\.(\d+)`)

// sshdVersion reads the OpenSSH version from "sshd -V" (which prints it
// and exits non-zero on older releases, hence the ignored error).
func sshdVersion(bin string) [2]int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, bin, "-V").CombinedOutput()
	m := versionRE.FindSubmatch(out)
	if m == nil {
		return [2]int{}
	}
	major, _ := strconv.Atoi(string(m[1]))
	minor, _ := strconv.Atoi(string(m[2]))
	return [2]int{major, minor}
}
