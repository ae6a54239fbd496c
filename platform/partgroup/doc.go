// Package partgroup shares a fixed set of partitions among the live
// replicas of one service, so that each partition is worked on by exactly
// one replica at a time and a replica that dies hands its partitions to
// the others within a lease.
//
// Writers use it to scale horizontally without losing per-series order:
// all samples of a series are on one partition, and one partition is sent
// by one replica, in stream order.
//
// It keeps its state in a JetStream key-value bucket whose keys expire
// after the lease:
//
//	<group>.m.<member>  heartbeat of a live replica, renewed every lease/3
//	<group>.p.<n>       claim on partition n: the member that works on it
//
// Every replica watches the group's keys, computes the same balanced
// assignment from the live members (rendezvous hashing bounded to
// ceil(partitions/members) per member, so a change of membership moves few
// partitions), and takes a partition only by creating its claim, which
// fails while another replica holds it. A replica gives a partition up by
// draining it (the work finishes the batch in hand and acknowledges it)
// and deleting the claim; a replica that stops renewing loses its claims
// when the lease expires, and stops its own work before that happens
// (self-fencing at half the lease).
//
// We evaluated github.com/synadia-io/orbit.go/pcgroups first. Its static
// groups fix the membership at creation (scaling means recreating the
// group); its elastic groups copy the stream into a second work-queue
// stream and change membership only by an administrative call naming each
// member, which an autoscaler that adds and removes pods does not make.
// Both rest on JetStream's pinned-client priority groups, which the writers
// use too, as a server-side fence behind the claims.
package partgroup
