// Command etcd is the etcd server, built from go.etcd.io/etcd/server/v3 so the test
// control plane does not depend on Debian's (too old) etcd package.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
