module github.com/epro-intake/epro-mq

go 1.26.8
