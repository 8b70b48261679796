package main

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rotatord/rotatord/internal/control"
	"github.com/rotatord/rotatord/internal/rotate"
	"github.com/rotatord/rotatord/policy"
)

// plan names the machines a rotation or retirement leaves behind, up to
// maxLeftBehind, and says where the rest are.
func TestPrintPlan_leftBehind(t *testing.T) {
	now := time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)
	pp := rotate.PolicyPlan{Policy: "train", Provider: "gcore-prod", Reason: "key is 90d old, overdue"}
	for i := range 22 {
		pp.LeftBehind = append(pp.LeftBehind, rotate.Machine{InstanceID: fmt.Sprintf("id-%d", i), Name: fmt.Sprintf("trainer-%d", i),
			Address: fmt.Sprintf("198.18.0.%d", i), KeyName: "train-20260801T000000", KeyStatus: "current", Why: "the planned rotation retires this key"})
	}
	pp.LeftBehind[1].Name, pp.LeftBehind[1].Address = "", ""
	var b bytes.Buffer
	printPlan(&b, []rotate.PolicyPlan{pp}, now)
	got := b.String()
	for _, want := range []string{
		"  22 running machine(s) keep a key this plan leaves behind (they still accept it):\n",
		"    trainer-0 (198.18.0.0) on train-20260801T000000 [current]: the planned rotation retires this key\n",
		"    id-1 on train-20260801T000000 [current]: ",
		"    ...and 2 more: rotatord report lists them all\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("plan output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "trainer-21") {
		t.Errorf("plan listed past %d machines", maxLeftBehind)
	}
}

// status ends with the policies whose machines run on a non-current key.
func TestPrintStatus_oldKeyMachines(t *testing.T) {
	var b bytes.Buffer
	printOldKeyMachines(&b, []control.PolicyStatus{{Name: "train", InstancesOnOldKeys: 5}, {Name: "gpu"}})
	if got, want := b.String(), "\ntrain: 5 running machine(s) on a non-current key (rotatord report lists them)\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// check names the accounts the inventory lists, and the Gcore regions.
func TestPrintInventorySummary(t *testing.T) {
	var b bytes.Buffer
	printInventorySummary(&b, &policy.Config{Providers: []policy.Provider{
		{Name: "sesterce-prod"}, {Name: "gcore-prod", Regions: []int64{76, 124}}, {Name: "gcore-lab", NoInventory: true}}})
	want := "\ninventory (which machines each key reached, listed after each run): sesterce-prod on; gcore-prod on (regions 76, 124); gcore-lab off\n"
	if got := b.String(); got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
}
