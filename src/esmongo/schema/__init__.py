"""Event schemas: the registry (JSON Schema per type and version), upcasters, the catalog.

Below the store: the store validates appends against the registry and upcasts on read.
"""

from esmongo.schema.catalog import SchemaCatalog
from esmongo.schema.registry import EventSchema, SchemaRegistry, Upcasters

__all__ = ["EventSchema", "SchemaCatalog", "SchemaRegistry", "Upcasters"]
