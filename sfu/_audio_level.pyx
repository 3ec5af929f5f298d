# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled RFC 6464 level reading; same API and results as :mod:`sfu._audio_level_py`.

Runs once per incoming speaker packet. See the Python reference for the
documentation.
"""

__all__ = ["NO_LEVEL", "read_audio_level"]

NO_LEVEL = -1


def read_audio_level(const unsigned char[:] packet not None, int extension_id):
    cdef Py_ssize_t size = packet.shape[0]
    cdef Py_ssize_t position, end
    cdef int profile, header, element_id, length
    if extension_id <= 0 or size < 12 or not (packet[0] & 0x10):
        return -1
    position = 12 + 4 * (packet[0] & 0x0F)
    if position + 4 > size:
        return -1
    profile = packet[position] << 8 | packet[position + 1]
    end = position + 4 + 4 * (packet[position + 2] << 8 | packet[position + 3])
    if end > size:
        return -1
    position += 4
    if profile == 0xBEDE:
        while position < end:
            header = packet[position]
            if header == 0:
                position += 1
                continue
            element_id = header >> 4
            length = (header & 0x0F) + 1
            if element_id == 15:
                return -1
            if element_id == extension_id:
                if position + 1 < end:
                    return packet[position + 1]
                return -1
            position += 1 + length
    elif profile & 0xFFF0 == 0x1000:
        while position + 1 < end:
            element_id = packet[position]
            if element_id == 0:
                position += 1
                continue
            length = packet[position + 1]
            if element_id == extension_id:
                if length >= 1 and position + 2 < end:
                    return packet[position + 2]
                return -1
            position += 2 + length
    return -1
