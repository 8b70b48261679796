package cloud

import "time"

// Instance kinds.
const (
	// KindInstance is a virtual machine (Gcore /instances, every Sesterce
	// instance).
	KindInstance = "instance"
	// KindBareMetal is a Gcore bare-metal server (/bminstances).
	KindBareMetal = "baremetal"
)

// Instance is one machine of a provider account and the SSH key it was
// provisioned with. Deleting a key object on the provider changes only what
// new machines get: a running machine keeps the key it was created with, so
// the inventory (DESIGN.md §9.1) maps each machine to its key to show which
// machines a retired key still opens.
//
// The provider clients list instances with
//
//	ListInstances(ctx context.Context, project int64, regions []int64) ([]Instance, error)
//
// which code that needs an inventory declares as its own small interface.
// The listing contract:
//   - Every machine that exists is returned once; machines the provider
//     reports as deleted are left out. Fields the provider did not send are
//     zero ("" or 0): decoding tolerates missing and unknown fields.
//   - A listing that fails in part (one Gcore region, one Sesterce detail
//     call, one undecodable instance) returns the instances it did read AND
//     a non-nil error that names each failed part ("region 76", "instance
//     65f..."). Callers treat such a listing as partial and the inventory
//     built from it as stale; they never drop the instances it did return.
//   - A listing that fails as a whole (bad credentials, the region list or
//     the Sesterce list unreadable) returns no instances and the error.
//   - Every error is, or joins, *Error values (errors.As and errors.Is with
//     the class sentinels work on the result).
type Instance struct {
	// ID is the provider's instance ID (Gcore: a UUID; Sesterce: 24 hex
	// digits).
	ID string
	// Name is the instance's name.
	Name string
	// Status is the provider's own status, as sent: Gcore ACTIVE, SHUTOFF,
	// ...; Sesterce active, pending, error. A stopped machine still has
	// its key, so no status is filtered out but deleted.
	Status string
	// Region is the region's name (Gcore "region" or the region list's
	// display_name; Sesterce region.name).
	Region string
	// RegionID is Gcore's numeric region ID; 0 for Sesterce.
	RegionID int64
	// ProjectID is the Gcore project; 0 for Sesterce.
	ProjectID int64
	// KeyName names the key the instance was provisioned with. Gcore
	// instances refer to a key by name only (ssh_key_name, formerly
	// keypair_name): a key deleted and recreated under the same name is
	// indistinguishable. Sesterce: sshKey.name. Empty when none is known.
	KeyName string
	// KeyID is the provider's ID of that key: Sesterce sshKey._id, which
	// is how Sesterce instances are attributed. Empty for Gcore.
	KeyID string
	// KeyFingerprint is the SHA256 fingerprint ("SHA256:...") of the key's
	// public half, when the provider sent it (Sesterce sshKey.publicKey);
	// empty otherwise.
	KeyFingerprint string
	// Address is the address to report and to reach the machine at. Gcore:
	// a floating IPv4, else a fixed IPv4 marked external in
	// fixed_ip_assignments, else the first fixed IPv4 (else IPv6 in the
	// same order); networks are read in name order so the choice is
	// stable. Sesterce: ip. Empty when none is known.
	Address string
	// User is the SSH login user where the provider says (Sesterce
	// sshUser); "" when unknown, as always on Gcore.
	User string
	// Port is the SSH port where the provider says (Sesterce sshPort); 0
	// when unknown.
	Port int
	// CreatedAt is when the instance was created; zero when the provider
	// did not say or sent a time that does not parse.
	CreatedAt time.Time
	// Kind is KindInstance or KindBareMetal.
	Kind string
}
