"""Matching service ("user in, top-k ads out", RRL paper §IV-C).

The export, index and gRPC service land with the serving issue; this package holds them.
"""
