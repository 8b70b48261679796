package etcd_test

import (
	"fmt"
	"testing"


	"github.com/rotatord/rotatord/internal/state"
	"github.com/rotatord/rotatord/internal/state/etcd"
	"github.com/rotatord/rotatord/internal/state/etcdtest"
	"github.com/rotatord/rotatord/internal/state/statetest"
)

// conformanceOps is the --max-txn-ops of the conformance cluster: the
// suite writes 900 keys in one Update (rotatord's own Updates stay under
// etcd's default of 128, which the other tests keep).
const conformanceOps = 1024

func TestConformance(t *testing.T) {
	c := etcdtest.StartWith(t, etcdtest.Config{Members: 3, MaxTxnOps: conformanceOps})
	cli := c.Client(t)
	n := 0
	statetest.Run(t, func(t *testing.T) func(t *testing.T) state.Backend {
		n++
		prefix := fmt.Sprintf("/conformance/%d/", n) // a fresh, empty location per test
		return func(t *testing.T) state.Backend {
			b, err := etcd.New(cli, etcd.Options{Prefix: prefix, MaxTxnOps: conformanceOps})
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	})
}
