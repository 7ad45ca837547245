module gpuserve/supervisor

go 1.22
