package state

import "errors"

// ErrFenced is returned (wrapped) by a write of a process that no longer
// leads: with a shared backend (etcd), every write of the leader is
// conditioned on its leadership, so a deposed or partitioned leader
// neither journals nor, since every side effect is journaled first,
// starts a side effect. Nothing of a fenced write is stored.
var ErrFenced = errors.New("not the leader: write fenced")
