// Command etcd is etcd's server, built from the go.etcd.io/etcd/server/v3 module for
// gpuserve's local test control plane (scripts/build-k8s, scripts/k8s-up).
//
// This wrapper exists because `go install go.etcd.io/etcd/server/v3@<version>` refuses the
// module: its go.mod has replace directives (api, client, pkg => ../...). This main does what
// that module's own main.go does.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
