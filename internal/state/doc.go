// Package state is rotatord's durable state: the rotation journal, the keys
// each policy manages, per-policy health, the notification outbox and the
// audit log.
//
// The records and their indexes are written once, here, as a typed Store
// over a Backend that only moves bytes in ordered buckets: bolt (one
// embedded bbolt file, the default) or etcd (several rotatord processes
// sharing one state, one of them leading). The rotation engine and the
// report see only Store and Tx; every backend passes the same conformance
// suite, statetest.Run.
//
// The state never holds a private key. It is protected only by file modes
// or etcd's access control, it is copied by backups, and the design
// promises that private halves live in Vault alone; so no record type has a
// field for one, and every value is scrubbed of PEM private key blocks
// before it is written in case one slips into a free-text field such as an
// error message.
//
// Values are JSON so that an operator can read a copy with bbolt's or
// etcd's own tools. Timestamps are stored in UTC.
package state
