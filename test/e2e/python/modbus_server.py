"""A Modbus TCP device for Edgeport's end-to-end tests, on Debian's pymodbus 3.0.

Run with /usr/bin/python3 (Debian's python3-pymodbus is installed for it):

    modbus_server.py PORT [DELAY_SECONDS]

Holding registers 0-29 hold one value of every data type Edgeport decodes
(see modbus_test.go); addresses from 30 on do not exist, so reading them
is answered with the IllegalDataAddress exception. Input registers 0-999
hold their own address. Coils 0-9 alternate. With DELAY_SECONDS every read
is answered that much later (a device slower than the poll). Prints
"ready" once listening.
"""
import asyncio
import sys
import time

from pymodbus.datastore import (ModbusSequentialDataBlock, ModbusServerContext,
                                ModbusSlaveContext)
from pymodbus.server import StartAsyncTcpServer

HOLDING = [
    0xFFFE,                          # 0: int16 -2
    0xFFFE,                          # 1: uint16 65534
    0xFFFF, 0xFFF0,                  # 2: int32 -16
    0x86A0, 0x0001,                  # 4: uint32 100000, low word first
    0x41C8, 0x0000,                  # 6: float32 25.0
    0x4039, 0x0000, 0x0000, 0x0000,  # 8: float64 25.0
    0xFFFF, 0xFFFF, 0xFFFF, 0xFFFD,  # 12: int64 -3
    0x0004, 0x0003, 0x0002, 0x0001,  # 16: uint64 0x0001000200030004, low word first
    0x5347, 0x3130, 0x4B00,          # 20: string "SG10K"
    1234,                            # 23: uint16 1234, scale 0.1 -> 123.4
    0xFEFF,                          # 24: int16 -2, bytes swapped
    0x0000, 0x4140,                  # 25: float32 12.0, low word first
    0, 0, 0,                         # 27-29
]


class SlowBlock(ModbusSequentialDataBlock):
    """A data block whose reads take DELAY seconds (the event loop waits too,
    as a single-threaded device would)."""

    delay = 0.0

    def getValues(self, address, count=1):
        if self.delay:
            time.sleep(self.delay)
        return super().getValues(address, count)


async def main():
    port = int(sys.argv[1])
    SlowBlock.delay = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    store = ModbusSlaveContext(
        hr=SlowBlock(0, list(HOLDING)),
        ir=SlowBlock(0, list(range(1000))),
        co=SlowBlock(0, [i % 2 == 0 for i in range(10)]),
        di=SlowBlock(0, [False] * 10),
        zero_mode=True,
    )
    context = ModbusServerContext(slaves=store, single=True)
    server = await StartAsyncTcpServer(context, address=("127.0.0.1", port), defer_start=True,
                                       allow_reuse_address=True)
    task = asyncio.create_task(server.serve_forever())
    await server.serving
    print("ready", flush=True)
    await task


asyncio.run(main())
