module github.com/epro-intake/epro-mq

go 1.26.0

require github.com/epro-intake/common v0.0.0

require (
	filippo.io/edwards25519 v1.1.0 // indirect
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/dgryski/go-rendezvous v0.0.0-20200823014737-9f7001d12a5f // indirect
	github.com/go-sql-driver/mysql v1.9.3 // indirect
	github.com/klauspost/compress v1.20.3 // indirect
	github.com/mfridman/interpolate v0.0.2 // indirect
	github.com/pierrec/lz4/v4 v4.1.33 // indirect
	github.com/pressly/goose/v3 v3.26.0 // indirect
	github.com/redis/go-redis/v9 v9.17.3 // indirect
	github.com/segmentio/kafka-go v0.4.51 // indirect
	github.com/sethvargo/go-retry v0.3.0 // indirect
	github.com/zeromicro/go-queue v1.2.2 // indirect
	github.com/zeromicro/go-zero v1.9.2 // indirect
	go.uber.org/multierr v1.11.0 // indirect
	golang.org/x/sync v0.22.0 // indirect
)

replace github.com/epro-intake/common => ../common
