// Command testenv prints what a test run will use of the machine's services
// (make test runs it first): the Postgres and Redis that answer, or that the
// tests needing them skip.
package main

import (
	"context"
	"os"
	"time"

	"github.com/viworks/backend-agent/pkg/testenv"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	testenv.Report(ctx, os.Stdout)
}
