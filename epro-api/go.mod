module github.com/epro-intake/epro-api

go 1.26.8
