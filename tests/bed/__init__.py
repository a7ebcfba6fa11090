"""The real-registry test bed: Debian docker-registry processes, a token server, an image generator,
skopeo seeding and a fault proxy. Independent of the product code's registry client."""
