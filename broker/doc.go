// Package broker is the root half of nannyagent: a gRPC server on a unix
// socket that serves only the worker's account and performs a closed set of
// typed requests, each judged against the policy and written to the
// decision log.
//
// Like OpenSSH's privsep monitor, the broker dispatches from a fixed table of
// request types (requestTable) and refuses everything else before a handler
// runs; each handler re-validates its request in full.
package broker
