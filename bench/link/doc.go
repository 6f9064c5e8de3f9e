// Package link emulates a WAN path inside one machine, at the packet level and
// in user space (the kernels ntc is benchmarked on have no netem), so that
// ntc's QUIC and the TCP baselines cross the same link.
//
// Vocabulary:
//
//   - A Link joins two Endpoints, A and B. Each is a network namespace the
//     link creates (ntc-link-PID-N-a, -b) holding only lo and a TUN device
//     with an address from 10.254.0.0/30 (A is .1, B is .2). Programs run in
//     an endpoint through Endpoint.Command or Endpoint.Wrap
//     (ip netns exec NS …) and reach the other end at its Addr.
//   - The relay is this process's side of the two TUN devices: per
//     direction, one goroutine reads packets and a second writes each one
//     to the other device when it is due.
//   - A Profile shapes each direction alike: a drop-tail queue of
//     QueueBytes in front of a serializer at Rate, then the one-way delay
//     RTT/2 with optional Jitter, then random Loss. Named profiles: dsl,
//     wan, lan.
//   - Stats count packets received, delivered, lost, overflowed per
//     direction.
//
// A link is gone after Close, after its context is done, or, when its process
// died first, at the next Up anywhere on the machine: each link holds a lock
// file in /run/ntc-link that tells live links from remains.
//
// The package does not add anything to the caller's own namespace (no veth,
// route or address), so nothing crosses to the host's network. It models no
// layer 2 (rates count IP bytes), no correlated or bursty loss, no duplication
// or corruption, and it does not segment or coalesce packets: the MTU is real.
package link
