"""An engine's KV event sockets on libzmq, the C library vLLM and SGLang publish with (through
pyzmq), for tests/zmq.rs's `libzmq` tests.

It binds a PUB socket and a ROUTER replay socket, as vLLM's publisher does (at the addresses
given as the first two arguments, else on free loopback ports), prints both addresses on one
line, and then takes one command a line from stdin, answering `ok` to each:

    publish SEQUENCE HEX   keep message SEQUENCE (payload in hex) for replay, and publish it
    keep SEQUENCE HEX      keep it for replay only: a message lost on the way
    probe LENGTH           publish a message whose sequence frame is LENGTH bytes, not 8

A message is three frames: the topic, the sequence number (8 bytes, big-endian, signed) and
the payload. A replay request is [identity, empty, first sequence number]; the answer is each
kept message from there on as [identity, empty, sequence, payload], then the sequence -1.
"""

import sys
import threading

import zmq

TOPIC = b"kv-events"
END_OF_REPLAY = -1


def sequence_bytes(sequence):
    return sequence.to_bytes(8, "big", signed=True)


def bind(socket, address):
    if address is None:
        port = socket.bind_to_random_port("tcp://127.0.0.1")
        return f"tcp://127.0.0.1:{port}"
    socket.bind(address)
    return address


def serve_replays(replay, kept, lock):
    while True:
        identity, _, start = replay.recv_multipart()
        first = int.from_bytes(start, "big", signed=True)
        with lock:
            answers = sorted(item for item in kept.items() if item[0] >= first)
        for sequence, payload in answers:
            replay.send_multipart([identity, b"", sequence_bytes(sequence), payload])
        replay.send_multipart([identity, b"", sequence_bytes(END_OF_REPLAY), b""])


def main():
    context = zmq.Context()
    publisher = context.socket(zmq.PUB)
    publisher.setsockopt(zmq.LINGER, 0)
    given = sys.argv[1:3] if len(sys.argv) > 2 else [None, None]
    address = bind(publisher, given[0])
    replay = context.socket(zmq.ROUTER)
    replay.setsockopt(zmq.LINGER, 0)
    replay_address = bind(replay, given[1])
    kept = {}
    lock = threading.Lock()
    threading.Thread(target=serve_replays, args=(replay, kept, lock), daemon=True).start()
    print(address, replay_address, flush=True)
    for line in sys.stdin:
        command, *arguments = line.split()
        if command == "probe":
            publisher.send_multipart([TOPIC, bytes(int(arguments[0])), b""])
        elif command in ("publish", "keep"):
            sequence, payload = int(arguments[0]), bytes.fromhex(arguments[1])
            with lock:
                kept[sequence] = payload
            if command == "publish":
                publisher.send_multipart([TOPIC, sequence_bytes(sequence), payload])
        else:
            sys.exit(f"unknown command {command!r}")
        print("ok", flush=True)


if __name__ == "__main__":
    main()
