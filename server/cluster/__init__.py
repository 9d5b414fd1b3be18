"""framecast on Ray Serve: replicas holding the engine, a front speaking framecast's gRPC API.

``replica`` (the deployment), ``front`` and ``front_jobs`` (the front's service and its job
records), ``claims`` (adapter names claimed across the cluster), ``launch`` (deployments, the
local cluster and the Ray Serve application), ``cli`` (``framecast cluster``). Needs the
``framecast[cluster]`` extra (Ray Serve); nothing else of framecast imports this package.
"""
