// Command ringctl is the operator CLI of a raftingest cluster: it shows the Raft status and the ring,
// and adds, drains and forgets members, by calling the Ring gRPC service any node serves (over
// mutual TLS with -tls.*). `ringctl tls ca|node|operator` make the cluster's certificates offline.
//
// Exit codes: 0 success, 1 the operation failed (the message names the node tried and carries the
// server's message), 2 usage error. Run `ringctl help` for the commands.
package main

import "os"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
