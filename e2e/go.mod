module github.com/viworks/backend-agent/e2e

go 1.26.0

require github.com/viworks/backend-agent/pkg v0.0.0

require github.com/stretchr/testify v1.12.1 // indirect

replace github.com/viworks/backend-agent/pkg => ../pkg
