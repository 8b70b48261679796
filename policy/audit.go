package policy

import "time"

// DefaultAuditRetention keeps a little more than the year PCI DSS asks
// for, so that an audit of the last twelve months always finds the
// entries it samples.
const DefaultAuditRetention = 400 * 24 * time.Hour

// minAuditRetention refuses a retention shorter than a key's usual life:
// the log must at least show the last rotation of every key.
const minAuditRetention = 30 * 24 * time.Hour

// AuditConfig is the audit log's retention.
type AuditConfig struct {
	// Retention is how long entries are kept; older ones are pruned and a
	// checkpoint entry keeps the chain verifiable.
	Retention time.Duration
}

var auditKeys = []string{"retention"}

func (p *parser) audit(top fields) AuditConfig {
	ac := AuditConfig{Retention: DefaultAuditRetention}
	f, ok := p.section(top, "audit", auditKeys)
	if !ok {
		return ac
	}
	w := where{path: "audit."}
	if v := p.duration(f, w, "retention"); v.set {
		if v.v < minAuditRetention {
			p.gotf(v.line, w, "retention", v.raw, "must be %s or more (the default, %s, keeps a year and a month)", formatDuration(minAuditRetention), formatDuration(DefaultAuditRetention))
		} else {
			ac.Retention = v.v
		}
	}
	return ac
}
