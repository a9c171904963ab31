"""The stateless gRPC front node: services, the claim path's hot parts, the call pipeline, metrics."""
