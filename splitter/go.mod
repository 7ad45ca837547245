module gpuserve/splitter

go 1.22
