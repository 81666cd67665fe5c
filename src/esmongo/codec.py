"""How documents cross the wire: dicts, aware UTC datetimes, Decimal as Decimal128.

The one codec every esmongo collection is read and written with; pure, no I/O.
"""

from __future__ import annotations

from datetime import UTC
from decimal import Decimal
from typing import Any

from bson.codec_options import CodecOptions, TypeDecoder, TypeEncoder, TypeRegistry
from bson.decimal128 import Decimal128

Document = dict[str, Any]
"""A MongoDB document as esmongo reads and writes it."""


class _DecimalEncoder(TypeEncoder):
    """Money is Decimal in Python and Decimal128 in MongoDB, never float."""

    @property
    def python_type(self) -> type:
        return Decimal

    def transform_python(self, value: Any) -> Decimal128:
        return Decimal128(value)


class _Decimal128Decoder(TypeDecoder):
    @property
    def bson_type(self) -> type:
        return Decimal128

    def transform_bson(self, value: Any) -> Decimal:
        return value.to_decimal()  # type: ignore[no-any-return]


CODEC_OPTIONS: CodecOptions[Document] = CodecOptions(
    document_class=dict,
    tz_aware=True,
    tzinfo=UTC,
    type_registry=TypeRegistry([_DecimalEncoder(), _Decimal128Decoder()]),
)
