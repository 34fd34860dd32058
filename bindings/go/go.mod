module github.com/nkv-project/nkv/bindings/go

go 1.19
