module github.com/epro-intake/e2e

go 1.26.8
