package execute

import (
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"
)

// cgroupJanitor keeps run cgroup creation and removal off the request
// path: it creates a few fresh, empty run cgroups ahead of time and
// removes each run's cgroups right after the run. Every run still gets
// cgroups of its own that no process has used before, and Run only returns
// once nothing of the run is alive; only the rmdir happens afterwards.
type cgroupJanitor struct {
	cg     *cgroups
	log    *slog.Logger
	grace  time.Duration
	spares chan *runCgroup
	retire chan *runCgroup
	want   chan struct{}
	stop   chan struct{}
	done   chan struct{}
	// taken counts runs that got cgroups (for tests).
	taken atomic.Int64
	// limits are the last limits a run asked for: spares are made with
	// them, so a run with the usual limits writes nothing on its path.
	limits atomic.Pointer[Limits]
}

func newJanitor(cg *cgroups, spares int, grace time.Duration, log *slog.Logger) *cgroupJanitor {
	j := &cgroupJanitor{
		cg: cg, log: log, grace: grace,
		spares: make(chan *runCgroup, spares),
		retire: make(chan *runCgroup, 64),
		want:   make(chan struct{}, 1),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	go j.loop()
	return j
}

// take returns fresh run cgroups with lim applied: a spare when one is
// ready, otherwise new ones.
func (j *cgroupJanitor) take(lim Limits) (*runCgroup, error) {
	j.taken.Add(1)
	if cur := j.limits.Load(); cur == nil || *cur != lim {
		j.limits.Store(&lim)
	}
	select {
	case rc := <-j.spares:
		if err := rc.setLimits(lim); err != nil {
			j.give(rc)
			return nil, err
		}
		return rc, nil
	default:
		j.wake()
		return j.cg.newRun(lim)
	}
}

// wake asks the janitor to refill the spares. It is called when a run
// ends rather than when one starts, so the refill does not compete with
// the fork.
func (j *cgroupJanitor) wake() {
	select {
	case j.want <- struct{}{}:
	default:
	}
}

// give hands used (and empty) run cgroups over for removal; when the queue
// is full it removes them at once.
func (j *cgroupJanitor) give(rc *runCgroup) {
	select {
	case j.retire <- rc:
	default:
		j.remove(rc)
	}
	j.wake()
}

func (j *cgroupJanitor) remove(rc *runCgroup) {
	if err := rc.remove(j.grace); err != nil {
		j.log.Warn("run cgroup not removed", "err", err)
	}
}

func (j *cgroupJanitor) loop() {
	defer close(j.done)
	for {
		if len(j.spares) < cap(j.spares) {
			select {
			case rc := <-j.retire:
				j.remove(rc)
				continue
			case <-j.stop:
				j.drain()
				return
			default:
			}
			rc, err := j.cg.newRun(j.spareLimits())
			if err != nil {
				j.log.Warn("prepare run cgroup", "err", err)
			} else {
				j.spares <- rc // only this goroutine fills it
				continue
			}
		}
		select {
		case rc := <-j.retire:
			j.remove(rc)
		case <-j.want:
		case <-j.stop:
			j.drain()
			return
		}
	}
}

// spareLimits are the limits the next spare is made with.
func (j *cgroupJanitor) spareLimits() Limits {
	if lim := j.limits.Load(); lim != nil {
		return *lim
	}
	return DefaultLimits
}

func (j *cgroupJanitor) drain() {
	for {
		select {
		case rc := <-j.retire:
			j.remove(rc)
		case rc := <-j.spares:
			j.remove(rc)
		default:
			return
		}
	}
}

// close removes the spares and every retired run cgroup, and stops.
func (j *cgroupJanitor) close() {
	close(j.stop)
	<-j.done
}

// setLimits writes lim into run cgroups that hold no process yet.
func (rc *runCgroup) setLimits(lim Limits) error {
	if lim.ChildMemory == rc.limits.ChildMemory && lim.ChildTasks == rc.limits.ChildTasks {
		return nil
	}
	rc.limits = lim
	if rc.v2Dir != "" {
		if rc.v2Ctl["memory"] {
			if err := writeFile(rc.v2Dir+"/memory.max", strconv.FormatInt(lim.ChildMemory, 10)); err != nil {
				return err
			}
		}
		if rc.v2Ctl["pids"] {
			if err := writeFile(rc.v2Dir+"/pids.max", strconv.Itoa(lim.ChildTasks)); err != nil {
				return err
			}
		}
	}
	for i := range rc.v1 {
		if err := rc.v1[i].setLimits(lim); err != nil {
			rc.limits = Limits{} // unknown now: rewrite next time
			return err
		}
	}
	return nil
}
