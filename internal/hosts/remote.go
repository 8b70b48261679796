package hosts

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sync"

	"github.com/pkg/sftp"
)

// maxFileSize bounds what rotatord reads: an authorized_keys file of
// thousands of keys is well under 1 MiB, so anything larger is not one.
const maxFileSize = 4 << 20

// remoteFile is authorized_keys as read, and everything replace needs to
// write its successor.
type remoteFile struct {
	path   string // the file edited: the configured path, or a link's target
	exists bool
	data   []byte
	mode   fs.FileMode // permission bits; meaningful when exists
	uid    uint32
	gid    uint32
	owner  bool // uid and gid are known
}

// readAuthorizedKeys reads the file at p. A missing file is an empty,
// non-existent remoteFile, not an error. A symbolic link is resolved on the
// server, so that the edit replaces the link's target and keeps the link.
func readAuthorizedKeys(c *sftp.Client, p string) (*remoteFile, error) {
	fi, err := c.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return &remoteFile{path: p}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", p, err)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		target, err := c.RealPath(p)
		if err != nil {
			return nil, fmt.Errorf("%w: resolve link %s: %v", ErrUnsafeFile, p, err)
		}
		if fi, err = c.Lstat(target); err != nil {
			return nil, fmt.Errorf("%w: stat %s (target of %s): %v", ErrUnsafeFile, target, p, err)
		}
		p = target
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file (%s)", ErrUnsafeFile, p, fi.Mode().Type())
	}
	f := &remoteFile{path: p, exists: true, mode: fi.Mode().Perm()}
	if st, ok := fi.Sys().(*sftp.FileStat); ok {
		f.uid, f.gid, f.owner = st.UID, st.GID, true
	}
	if f.data, err = readAll(c, p, fi.Size()); err != nil {
		return nil, err
	}
	return f, nil
}

// readAll reads a whole file whose size is believed to be size. The
// common case costs one round trip: the expected bytes and a one-byte
// probe past them are requested at once, and a probe that meets EOF proves
// the file ends there. A file that grew meanwhile is read again to its end.
func readAll(c *sftp.Client, p string, size int64) ([]byte, error) {
	if size < 0 || size > maxFileSize { // a broken server can claim any size
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrUnsafeFile, p, maxFileSize)
	}
	h, err := c.Open(p)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", p, err)
	}
	// The handle is read-only: its close can trail behind the next request.
	defer func() { go h.Close() }()

	buf := make([]byte, size)
	var (
		n, pn      int
		err1, err2 error
		probe      [1]byte
	)
	concurrently(
		func() { n, err1 = h.ReadAt(buf, 0) },
		func() { pn, err2 = h.ReadAt(probe[:], size) },
	)
	if err1 != nil && !errors.Is(err1, io.EOF) {
		return nil, fmt.Errorf("read %s: %w", p, err1)
	}
	if n < len(buf) || (pn == 0 && errors.Is(err2, io.EOF)) {
		// Shorter than believed (it ends before size), or exactly size.
		return buf[:n], nil
	}
	if err2 != nil && !errors.Is(err2, io.EOF) {
		return nil, fmt.Errorf("read %s: %w", p, err2)
	}
	// Longer than believed: read on to the end.
	data := buf[:n]
	chunk := make([]byte, 32<<10)
	for off := int64(n); ; {
		m, err := h.ReadAt(chunk, off)
		data = append(data, chunk[:m]...)
		off += int64(m)
		if len(data) > maxFileSize {
			return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrUnsafeFile, p, maxFileSize)
		}
		if errors.Is(err, io.EOF) {
			return data, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", p, err)
		}
	}
}

// concurrently runs fns at once and waits for them: SFTP requests issued
// together share one round trip. Only independent requests go together;
// OpenSSH's server answers in order, but the order they are sent in is up
// to the scheduler.
func concurrently(fns ...func()) {
	var wg sync.WaitGroup
	for _, fn := range fns[1:] {
		wg.Go(fn)
	}
	fns[0]()
	wg.Wait()
}

// replace writes content as the new file, atomically, only if the file
// still holds what f says was read; on success f describes the new file. The temporary file is created
// exclusively beside the original (so it is on the same file system and a
// planted link cannot redirect the write), given the original's owner and
// at most its owner's permission bits (0600 for a new file) before any
// content goes in, flushed, read back, and renamed over the original with
// posix-rename@openssh.com. Nothing is written when the server lacks that
// extension: a plain SFTP rename fails over an existing file, and
// remove-then-rename would leave a window without the file.
func replace(c *sftp.Client, f *remoteFile, content []byte, beforeRename func(string)) (err error) {
	if _, ok := c.HasExtension("posix-rename@openssh.com"); !ok {
		return ErrNoAtomicRename
	}
	dir, base := path.Split(f.path)
	if dir == "" {
		dir = "."
	}
	if !f.exists {
		if err := ensureDir(c, dir); err != nil {
			return err
		}
	}
	tmp := path.Join(dir, "."+base+".rotatord.tmp")
	h, err := createExclusive(c, tmp)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			// The original is untouched; leave no debris beside it.
			h.Close()
			_ = c.Remove(tmp)
		}
	}()

	mode := fs.FileMode(0o600)
	if f.exists {
		mode = f.mode & 0o600
	}
	// Mode and owner are set before any content goes in. A chown to the
	// owner the file already has is a no-op; to another one it needs
	// privileges, and failing is the right answer then: a root-owned
	// authorized_keys must not become the login user's.
	var chmodErr, chownErr error
	concurrently(
		func() { chmodErr = h.Chmod(mode) },
		func() {
			if f.exists && f.owner {
				chownErr = h.Chown(int(f.uid), int(f.gid))
			}
		},
	)
	if chmodErr != nil {
		return fmt.Errorf("chmod %s: %w", tmp, chmodErr)
	}
	if chownErr != nil {
		return fmt.Errorf("keep owner %d:%d of %s: %w", f.uid, f.gid, f.path, chownErr)
	}
	if n, err := h.Write(content); err != nil || n != len(content) {
		return fmt.Errorf("write %s: wrote %d of %d bytes: %w", tmp, n, len(content), err)
	}
	if _, ok := c.HasExtension("fsync@openssh.com"); ok {
		// Durable before it becomes the file sshd reads: a power cut after
		// the rename must not leave an empty authorized_keys.
		if err := h.Sync(); err != nil {
			return fmt.Errorf("sync %s: %w", tmp, err)
		}
	}
	if beforeRename != nil {
		beforeRename(f.path)
	}
	// Before the rename, at once: the temporary file must hold exactly
	// content with no wider mode than intended (a server may ignore a
	// setstat, or another process may have written to it), and the original
	// must still hold exactly what the edit was computed from.
	var (
		back         = make([]byte, len(content)+1)
		backN        int
		backErr      error
		st           fs.FileInfo
		stErr, reErr error
		now          *remoteFile
	)
	concurrently(
		func() { backN, backErr = h.ReadAt(back, 0) },
		func() { st, stErr = h.Stat() },
		func() { now, reErr = readAuthorizedKeys(c, f.path) },
	)
	switch {
	case backErr != nil && !errors.Is(backErr, io.EOF):
		return fmt.Errorf("read back %s: %w", tmp, backErr)
	case !bytes.Equal(back[:backN], content):
		return fmt.Errorf("read back %s: %d bytes differ from the %d written", tmp, backN, len(content))
	case stErr != nil:
		return fmt.Errorf("stat %s: %w", tmp, stErr)
	case st.Mode().Perm()&^mode != 0:
		return fmt.Errorf("%w: %s has mode %o after chmod %o", ErrUnsafeFile, tmp, st.Mode().Perm(), mode)
	case reErr != nil:
		return fmt.Errorf("re-read before rename: %w", reErr)
	case now.exists != f.exists || now.path != f.path || !bytes.Equal(now.data, f.data):
		return ErrConcurrentEdit
	}
	// The handle can close while the rename goes out: the content is
	// already synced, and renaming an open file is fine.
	var renameErr error
	concurrently(
		func() { renameErr = c.PosixRename(tmp, f.path) },
		func() { _ = h.Close() },
	)
	if renameErr != nil {
		return fmt.Errorf("rename %s to %s: %w", tmp, f.path, renameErr)
	}
	f.exists, f.data, f.mode = true, content, mode
	return nil
}

// createExclusive creates the temporary file, failing if anything already
// has its name. A leftover from a killed run is removed once and the create
// retried (OpenSSH reports an existing file as a generic failure, so the
// cause cannot be told apart before trying).
func createExclusive(c *sftp.Client, tmp string) (*sftp.File, error) {
	const flags = os.O_RDWR | os.O_CREATE | os.O_EXCL
	h, err := c.OpenFile(tmp, flags)
	if err == nil {
		return h, nil
	}
	if rmErr := c.Remove(tmp); rmErr != nil {
		return nil, fmt.Errorf("create %s: %w", tmp, err)
	}
	h, err = c.OpenFile(tmp, flags)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", tmp, err)
	}
	return h, nil
}

// ensureDir creates the file's directory (mode 0700, as ssh expects for
// ~/.ssh) when it is missing. Only the last component is created: a missing
// home or a mistyped absolute path is an error, not a tree to build.
func ensureDir(c *sftp.Client, dir string) error {
	fi, err := c.Stat(dir)
	if err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%w: %s is not a directory", ErrUnsafeFile, dir)
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("stat %s: %w", dir, err)
	}
	if err := c.Mkdir(dir); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	if err := c.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("chmod %s: %w", dir, err)
	}
	return nil
}
