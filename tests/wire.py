"""
Protobuf wire-format pieces tests write by hand: varints, and messages in
the length-delimited stream seal's clients send.
"""

from __future__ import annotations

from google.protobuf.message import Message


def varint(value: int) -> bytes:
    """
    C{value} as a protobuf base-128 varint.
    """
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def delimited(*messages: Message) -> bytes:
    """
    C{messages} each preceded by its length as a varint.
    """
    out = bytearray()
    for message in messages:
        data = message.SerializeToString()
        out += varint(len(data)) + data
    return bytes(out)
