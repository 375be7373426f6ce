module github.com/viworks/backend-agent/scheduler

go 1.26.0

require github.com/viworks/backend-agent/pkg v0.0.0

replace github.com/viworks/backend-agent/pkg => ../pkg
