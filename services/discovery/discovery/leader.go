package discovery

import (
	"context"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// runLeaderElection campaigns for the Lease until ctx ends; while this
// replica leads, reconcile writes assignments.
func (d *Discovery) runLeaderElection(ctx context.Context) error {
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: d.cfg.LeaseNamespace, Name: d.cfg.LeaseName},
		Client:     d.client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: d.cfg.Identity},
	}
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   15 * time.Second,
		RenewDeadline:   10 * time.Second,
		RetryPeriod:     2 * time.Second,
		ReleaseOnCancel: true,
		Name:            d.cfg.LeaseName,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(context.Context) {
				d.logger.Info("leading: writing assignments", "lease", d.cfg.LeaseNamespace+"/"+d.cfg.LeaseName)
				d.leading.Store(true)
				d.metrics.leader.Set(1)
				d.trigger()
			},
			OnStoppedLeading: func() {
				d.logger.Info("no longer leading")
				d.leading.Store(false)
				d.metrics.leader.Set(0)
			},
			OnNewLeader: func(id string) {
				if id != d.cfg.Identity {
					d.logger.Info("another replica leads", "leader", id)
				}
			},
		},
	})
	if err != nil {
		return fmt.Errorf("leader elector: %w", err)
	}
	// Run returns when leadership is lost; campaign again until stopped.
	for ctx.Err() == nil {
		le.Run(ctx)
	}
	return nil
}
