from typing import Optional, Tuple, Union

MSS_TABLE: Tuple[int, ...]
COOKIE_PERIOD_US: int
MAX_AGE: int

def siphash(key: bytes, msg: bytes) -> int: ...

class SynCookies:
    def __init__(self, secret: bytes) -> None: ...
    def make(self, caddr: bytes, saddr: bytes, cport: int, sport: int, client_isn: int, mss: int,
             wscale: Optional[int], sack_perm: bool, timestamps: bool, now: int) -> int: ...
    def check(self, caddr: bytes, saddr: bytes, cport: int, sport: int, client_isn: int, cookie: int,
              now: int) -> Union[str, Tuple[int, Optional[int], bool, bool]]: ...
