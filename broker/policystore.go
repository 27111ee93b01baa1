package broker

import (
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"github.com/nannyai/nannyagent/policy"
)

// PolicyLoader loads the merged policy from disk.
type PolicyLoader func() (*policy.Policy, error)

// loadedPolicy is a policy, when it was loaded, and its summary for Probe.
type loadedPolicy struct {
	policy   *policy.Policy
	loadedAt time.Time
	info     *brokerv1.PolicyInfo
	caps     *capabilities
}

// capabilityBuilder builds the runtime objects a policy configures.
type capabilityBuilder func(*policy.Policy) (*capabilities, error)

func newLoaded(p *policy.Policy, build capabilityBuilder) (*loadedPolicy, error) {
	caps, err := build(p)
	if err != nil {
		return nil, err
	}
	lp := &loadedPolicy{policy: p, loadedAt: time.Now(), caps: caps}
	lp.info = policyInfo(lp)
	return lp, nil
}

// policyStore holds the policy in force. A reload that fails keeps the old
// policy, so a typo in a new file never leaves the broker without one.
type policyStore struct {
	load  PolicyLoader
	build capabilityBuilder
	cur   atomic.Pointer[loadedPolicy]
	log   *slog.Logger
}

func newPolicyStore(load PolicyLoader, build capabilityBuilder, log *slog.Logger) (*policyStore, error) {
	s := &policyStore{load: load, build: build, log: log}
	p, err := load()
	if err != nil {
		return nil, err
	}
	lp, err := newLoaded(p, build)
	if err != nil {
		return nil, err
	}
	s.cur.Store(lp)
	log.Info("policy loaded", "policy_sha256", p.SHA256(), "files", len(p.Files()))
	return s, nil
}

// current returns the policy in force.
func (s *policyStore) current() *loadedPolicy { return s.cur.Load() }

// sha256 is the policy hash for log lines.
func (s *policyStore) sha256() string { return s.cur.Load().policy.SHA256() }

// reload loads the files again; on failure the old policy stays.
func (s *policyStore) reload() error {
	old := s.cur.Load().policy.SHA256()
	p, err := s.load()
	var lp *loadedPolicy
	if err == nil {
		lp, err = newLoaded(p, s.build)
	}
	if err != nil {
		s.log.Error("policy reload failed; keeping the policy in force", "policy_sha256", old, "error", err.Error())
		return fmt.Errorf("reload policy: %w", err)
	}
	s.cur.Store(lp)
	s.log.Info("policy reloaded", "old_sha256", old, "policy_sha256", p.SHA256())
	return nil
}
