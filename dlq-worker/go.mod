module github.com/epro-intake/dlq-worker

go 1.26.8
