module github.com/epro-intake/common

go 1.26.8
