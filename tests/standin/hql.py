"""The part of HQL the stand-in answers, parsed, checked against the model and evaluated over
the world, with rows counted as the database would return them.

What is checked, as the server's query layer checks it (ome ``StringQuery.buildQuery``: a
query the parser refuses is ``QueryException("Illegal query:...")``; a named parameter without
a value is ``ApiUsageException("Null parameters not allowed: ...")``; parameters the query does
not name are not bound):

- every ``alias.property.property`` against omero-py's model classes (``model.fields``); an
  unknown property is "could not resolve property: X of: ome.model.Y", a path through a
  collection "illegal attempt to dereference collection";
- a join over a collection (``join l.child a join a.mapValue mv``, ``join fetch f.usedFiles``)
  gives one row per element, and the same parent comes back once per row unless the query says
  ``distinct`` (Hibernate lists the rows as they come: ome ``Query.doInHibernate``);
- a list parameter binds one JDBC parameter per element, every list alike: PostgreSQL rewrites
  nothing (ome ``PostgresSqlAction.rewriteHql`` is a no-op), and more parameters than the
  driver's cap fail in the driver (pgjdbc: "Tried to send an out-of-range integer as a 2-byte
  value"), surfacing as ``InternalException`` (ome ``ServiceHandler.getAndLogException``);
- the page limit of a query that fetches a collection is applied in memory, after every joined
  row was fetched (Hibernate: "firstResult/maxResults specified with collection fetch; applying
  in memory"): such a query's rows are all of them.

What is evaluated: ``select [distinct] expr, ... from Class alias`` with ``[left [outer]|inner]
join [fetch] path [as] alias``, ``where`` with ``and``/``or``/``not``, comparisons, ``in``
(a parameter, a list of literals or a subquery), ``[not] exists (subquery)``, ``is [not] null``,
``order by expr [asc|desc], ...``, ``index(alias)`` of a list element, and paging from
``omero.sys.Parameters``. Anything else is refused as not evaluated, loudly.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

from . import model

PARAM_CAP = 32767  # pgjdbc before 42.4 (Short.MAX_VALUE); newer drivers allow 65535


class HqlError(Exception):
    """A query the server's parser refuses (``QueryException``)."""


class ParamError(Exception):
    """A query whose parameters the server refuses (``ApiUsageException``)."""


class DriverError(Exception):
    """A failure in the JDBC driver or the database (``InternalException``)."""


class NotEvaluated(Exception):
    """HQL the stand-in does not evaluate (refused loudly, never guessed)."""


# -- the syntax ---------------------------------------------------------------------------------
@dataclass
class Path:
    alias: str
    props: tuple
    steps: list = field(default_factory=list)  # resolved Fields, filled in by the checker
    kind: str = ""  # what the path ends on: "entity", "scalar", "element", "permissions"
    cls: str | None = None  # the entity class it ends on


@dataclass
class Param:
    name: str


@dataclass
class Lit:
    value: object


@dataclass
class Func:
    name: str
    args: list


@dataclass
class Cmp:
    op: str
    left: object
    right: object


@dataclass
class In:
    expr: object
    items: object  # Param, list of expressions, or Query
    negated: bool = False


@dataclass
class Exists:
    query: Query


@dataclass
class IsNull:
    expr: object
    negated: bool = False


@dataclass
class BoolOp:
    op: str  # "and" | "or"
    parts: list


@dataclass
class Not:
    cond: object


@dataclass
class Join:
    outer: bool
    fetch: bool
    path: Path
    alias: str | None
    cls: str | None = None  # the joined class ("NamedValue" for a mapValue element)
    collection: bool = False


@dataclass
class Query:
    text: str
    distinct: bool
    select: list
    cls: str
    alias: str
    joins: list
    where: object
    order: list  # (expr, descending)
    parent: Query | None = None
    aliases: dict = field(default_factory=dict)  # alias -> class


KEYWORDS = {
    "select",
    "distinct",
    "from",
    "join",
    "left",
    "right",
    "outer",
    "inner",
    "fetch",
    "where",
    "and",
    "or",
    "not",
    "exists",
    "in",
    "order",
    "group",
    "by",
    "asc",
    "desc",
    "as",
    "is",
    "null",
    "having",
    "like",
    "between",
}
_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<param>:\w+)|(?P<num>-?\d+(?:\.\d+)?)"
    r"|(?P<op><>|!=|>=|<=|[=<>(),*])|(?P<word>[A-Za-z_][\w.]*))"
)


def tokenize(text: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise HqlError(f"unexpected token at {pos}: {text[pos : pos + 20]!r}")
        kind = m.lastgroup
        value = m.group(kind)
        if kind == "word" and value.lower() in KEYWORDS:
            kind, value = "kw", value.lower()
        tokens.append((kind, value))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0

    def peek(self, k: int = 0) -> tuple[str, str]:
        j = self.i + k
        return self.tokens[j] if j < len(self.tokens) else ("end", "")

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        self.i += 1
        return tok

    def accept(self, *values: str) -> bool:
        kind, value = self.peek()
        if kind in ("kw", "op") and value in values:
            self.i += 1
            return True
        return False

    def expect(self, value: str) -> None:
        if not self.accept(value):
            raise HqlError(f"expecting '{value}', found '{self.peek()[1] or 'end of query'}'")

    def query(self, parent: Query | None = None) -> Query:
        distinct, select = False, []
        if self.accept("select"):
            distinct = self.accept("distinct")
            select.append(self.expr())
            while self.accept(","):
                select.append(self.expr())
        self.expect("from")
        kind, cls = self.take()
        if kind != "word" or "." in cls:
            raise HqlError(f"expecting a class name after 'from', found '{cls}'")
        self.accept("as")
        alias = cls
        if self.peek()[0] == "word":
            alias = self.take()[1]
        if self.peek() == ("op", ","):
            raise NotEvaluated("a second class in 'from' (a cross join)")
        joins = []
        while True:
            outer = False
            if self.accept("left"):
                self.accept("outer")
                outer = True
            elif self.accept("right"):
                raise NotEvaluated("right joins")
            elif self.accept("inner"):
                pass
            elif self.peek() != ("kw", "join"):
                break
            self.expect("join")
            fetch = self.accept("fetch")
            path = self.path()
            self.accept("as")
            join_alias = self.take()[1] if self.peek()[0] == "word" else None
            joins.append(Join(outer, fetch, path, join_alias))
        where = None
        if self.accept("where"):
            where = self.cond()
        if self.peek() == ("kw", "group"):
            raise NotEvaluated("group by")
        order = []
        if self.accept("order"):
            self.expect("by")
            while True:
                expr = self.expr()
                desc = False
                if self.accept("desc"):
                    desc = True
                else:
                    self.accept("asc")
                order.append((expr, desc))
                if not self.accept(","):
                    break
        return Query(self.text, distinct, select, cls, alias, joins, where, order, parent)

    def path(self) -> Path:
        kind, value = self.take()
        if kind != "word":
            raise HqlError(f"expecting a path, found '{value}'")
        head, *props = value.split(".")
        return Path(head, tuple(props))

    def expr(self):
        kind, value = self.peek()
        if kind == "word" and self.peek(1) == ("op", "("):
            self.take()
            self.take()
            args = []
            if not self.accept(")"):
                if self.accept("distinct"):
                    raise NotEvaluated("distinct inside a function")
                args.append(self.expr())
                while self.accept(","):
                    args.append(self.expr())
                self.expect(")")
            return Func(value.lower(), args)
        if kind == "word":
            return self.path()
        if kind == "param":
            self.take()
            return Param(value[1:])
        if kind == "str":
            self.take()
            return Lit(value[1:-1].replace("''", "'"))
        if kind == "num":
            self.take()
            return Lit(float(value) if "." in value else int(value))
        if kind == "kw" and value == "null":
            self.take()
            return Lit(None)
        if self.accept("("):
            if self.peek() == ("kw", "select"):
                raise NotEvaluated("a subquery as a value")
            inner = self.expr()
            self.expect(")")
            return inner
        raise HqlError(f"unexpected '{value or 'end of query'}'")

    def cond(self):
        parts = [self.conj()]
        while self.accept("or"):
            parts.append(self.conj())
        return parts[0] if len(parts) == 1 else BoolOp("or", parts)

    def conj(self):
        parts = [self.neg()]
        while self.accept("and"):
            parts.append(self.neg())
        return parts[0] if len(parts) == 1 else BoolOp("and", parts)

    def neg(self):
        if self.accept("not"):
            return Not(self.neg())
        if self.accept("exists"):
            self.expect("(")
            sub = self.query()
            self.expect(")")
            return Exists(sub)
        if self.peek() == ("op", "(") and not self._parenthesised_value():
            self.take()
            inner = self.cond()
            self.expect(")")
            return inner
        return self.predicate()

    def _parenthesised_value(self) -> bool:
        """``(:eid)`` is a value, ``(a = b or c = d)`` a condition."""
        return self.peek(1)[0] in ("param", "str", "num") and self.peek(2) == ("op", ")")

    def predicate(self):
        left = self.expr()
        negated = self.accept("not")
        if self.accept("in"):
            self.expect("(")
            if self.peek() == ("kw", "select"):
                items = self.query()
            else:
                items = [self.expr()]
                while self.accept(","):
                    items.append(self.expr())
                if len(items) == 1 and isinstance(items[0], Param):
                    items = items[0]
            self.expect(")")
            return In(left, items, negated)
        if negated:
            raise HqlError("expecting 'in' after 'not'")
        if self.accept("is"):
            neg = self.accept("not")
            self.expect("null")
            return IsNull(left, neg)
        kind, op = self.peek()
        if kind == "kw" and op in ("like", "between"):
            raise NotEvaluated(op)
        if kind != "op" or op not in ("=", "!=", "<>", ">", "<", ">=", "<="):
            raise HqlError(f"expecting a comparison, found '{op or 'end of query'}'")
        self.take()
        return Cmp("!=" if op == "<>" else op, left, self.expr())


def parse(text: str) -> Query:
    parser = _Parser(text)
    query = parser.query()
    if parser.peek()[0] != "end":
        raise HqlError(f"unexpected token: '{parser.peek()[1]}'")
    check(query)
    return query


# -- checking against the model ---------------------------------------------------------------
def _lookup(query: Query | None, alias: str) -> tuple[Query, str] | None:
    while query is not None:
        if alias in query.aliases:
            return query, query.aliases[alias]
        query = query.parent
    return None


def _resolve(query: Query, path: Path, joining: bool = False) -> None:
    found = _lookup(query, path.alias)
    if found is None:
        raise HqlError(f"Invalid path: '{'.'.join((path.alias, *path.props))}'")
    cls = found[1]
    steps = []
    kind = "entity"
    for n, prop in enumerate(path.props):
        last = n == len(path.props) - 1
        if kind in ("permissions", "scalar"):
            raise HqlError(f"could not resolve property: {prop}")
        if cls == "NamedValue":
            if prop not in ("name", "value"):
                raise HqlError(f"could not resolve property: {prop} of: NamedValue")
            steps.append(model.Field(prop, "scalar"))
            kind = "scalar"
            continue
        if cls == "Details":
            f = model.details_fields().get(prop)
            if f is None:
                raise HqlError(f"could not resolve property: details.{prop}")
        else:
            try:
                f = model.field(cls, prop)
            except model.ModelError as exc:
                raise HqlError(str(exc)) from None
        steps.append(f)
        if f.kind == "details":
            cls, kind = "Details", "details"
        elif f.kind == "ref":
            cls, kind = f.target, "entity"
        elif f.kind == "permissions":
            kind = "permissions"
        elif f.kind in ("coll", "values"):
            if not (last and joining):
                raise HqlError(f"illegal attempt to dereference collection [{'.'.join((path.alias, *path.props))}]")
            cls, kind = (f.target if f.kind == "coll" else "NamedValue"), "element"
        else:
            kind = "scalar"
    if kind == "details":
        raise HqlError(f"could not resolve property: details of {path.alias}")
    path.steps, path.kind, path.cls = steps, kind, cls if kind in ("entity", "element") else None


def _check_expr(query: Query, expr) -> None:
    if isinstance(expr, Path):
        _resolve(query, expr)
    elif isinstance(expr, Func):
        if expr.name == "index":
            if len(expr.args) != 1 or not isinstance(expr.args[0], Path) or expr.args[0].props:
                raise HqlError("index() takes the alias of a list element")
            found = _lookup(query, expr.args[0].alias)
            join = next((j for j in _all_joins(query) if j.alias == expr.args[0].alias), None)
            if found is None or join is None or not join.collection:
                raise HqlError(f"index() of '{expr.args[0].alias}', which is not joined from a list")
        elif expr.name in ("lower", "upper"):
            for arg in expr.args:
                _check_expr(query, arg)
        else:
            raise NotEvaluated(f"the function {expr.name}()")


def _all_joins(query: Query | None):
    while query is not None:
        yield from query.joins
        query = query.parent


def _check_cond(query: Query, cond) -> None:
    if cond is None:
        return
    if isinstance(cond, BoolOp):
        for part in cond.parts:
            _check_cond(query, part)
    elif isinstance(cond, Not):
        _check_cond(query, cond.cond)
    elif isinstance(cond, Cmp):
        _check_expr(query, cond.left)
        _check_expr(query, cond.right)
    elif isinstance(cond, In):
        _check_expr(query, cond.expr)
        if isinstance(cond.items, Query):
            cond.items.parent = query
            check(cond.items)
            if len(cond.items.select) != 1:
                raise HqlError("a subquery in 'in' selects one value")
        elif isinstance(cond.items, list):
            for item in cond.items:
                _check_expr(query, item)
    elif isinstance(cond, Exists):
        cond.query.parent = query
        check(cond.query)
    elif isinstance(cond, IsNull):
        _check_expr(query, cond.expr)


def check(query: Query) -> None:
    """Resolves every alias and path of ``query`` against the model, or raises ``HqlError``."""
    if not model.is_class(query.cls):
        raise HqlError(f"{query.cls} is not mapped")
    query.aliases = {query.alias: query.cls}
    for join in query.joins:
        _resolve(query, join.path, joining=True)
        if join.path.kind not in ("entity", "element") or not join.path.props:
            raise HqlError(f"cannot join '{'.'.join((join.path.alias, *join.path.props))}'")
        join.cls = join.path.cls
        join.collection = join.path.kind == "element"
        if join.alias:
            if join.alias in query.aliases:
                raise HqlError(f"alias '{join.alias}' defined twice")
            query.aliases[join.alias] = join.cls
    for expr in query.select:
        _check_expr(query, expr)
    _check_cond(query, query.where)
    for expr, _desc in query.order:
        _check_expr(query, expr)


# -- evaluating ---------------------------------------------------------------------------------
@dataclass
class Element:
    """One element of a joined collection: the object, or a name-value pair of a map."""

    owner: object
    index: int
    value: object  # the element object, or (name, value) of a NamedValue


@dataclass
class Result:
    rows: list  # per result row: tuple of values (objects, Elements, plain values)
    db_rows: int  # rows the database sent
    fetches: dict  # (alias of the parent, property) -> {parent id: [elements in row order]}


class Evaluator:
    """Evaluates a checked query over ``world`` for one session (its reads filtered as the
    server's security filters do: ``world.readable(session, obj)``)."""

    def __init__(self, world, session, values: dict, cap: int = PARAM_CAP) -> None:
        self.world = world
        self.session = session
        self.values = values
        self.cap = cap
        self._sets: dict = {}  # id(In) -> its constant values (a parameter, literals, an uncorrelated subquery)

    # ---- parameters
    def bind(self, query: Query) -> None:
        names: list[str] = []
        _params_of(query, names)
        count = 0
        for name in dict.fromkeys(names):
            if self.values.get(name) is None:
                raise ParamError(f"Null parameters not allowed: {name}")
            value = self.values[name]
            if isinstance(value, list):
                if not value:
                    raise DriverError('ERROR: syntax error at or near ")"')
                count += len(value)
            else:
                count += 1
        if count > self.cap:
            raise DriverError(f"Tried to send an out-of-range integer as a 2-byte value: {count}")

    # ---- values of expressions
    def value(self, expr, row: dict):
        if isinstance(expr, Path):
            return self.walk(expr, row)
        if isinstance(expr, Param):
            return self.values[expr.name]
        if isinstance(expr, Lit):
            return expr.value
        if isinstance(expr, Func):
            if expr.name == "index":
                return row[expr.args[0].alias].index
            inner = self.value(expr.args[0], row)
            if inner is None:
                return None
            return inner.lower() if expr.name == "lower" else inner.upper()
        raise NotEvaluated(type(expr).__name__)

    def walk(self, path: Path, row: dict):
        value = row[path.alias]
        for step in path.steps:
            if value is None:
                return None
            if isinstance(value, Element):
                if value.value is not None and isinstance(value.value, tuple):
                    return value.value[0 if step.name == "name" else 1]
                value = value.value
            if step.kind == "id":
                return value.id
            if step.kind == "details":
                value = ("details", value)
                continue
            if isinstance(value, tuple) and value[0] == "details":
                value = self.world.details_of(value[1], step.name)
                continue
            if step.kind == "ref":
                value = self.world.deref(value, step)
            elif step.kind == "scalar":
                value = self.world.scalar(value, step.name)
        if isinstance(value, Element):
            value = value.value
        return value

    # ---- conditions
    def test(self, cond, row: dict) -> bool:
        if cond is None:
            return True
        if isinstance(cond, BoolOp):
            if cond.op == "and":
                return all(self.test(p, row) for p in cond.parts)
            return any(self.test(p, row) for p in cond.parts)
        if isinstance(cond, Not):
            return not self.test(cond.cond, row)
        if isinstance(cond, Cmp):
            left, right = _key(self.value(cond.left, row)), _key(self.value(cond.right, row))
            if left is None or right is None:
                return False
            return _COMPARE[cond.op](left, right)
        if isinstance(cond, In):
            left = _key(self.value(cond.expr, row))
            if left is None:
                return False
            return (left in self._members(cond, row)) != cond.negated
        if isinstance(cond, Exists):
            return bool(self.run(cond.query, outer=row, limit=1).rows)
        if isinstance(cond, IsNull):
            return (self.value(cond.expr, row) is None) != cond.negated
        raise NotEvaluated(type(cond).__name__)

    def _members(self, cond: In, row: dict) -> set:
        """The values ``in (...)`` tests against; computed once when they do not depend on the
        row (a parameter, literals, a subquery that refers to no outer alias)."""
        cached = self._sets.get(id(cond))
        if cached is not None:
            return cached
        items = cond.items
        if isinstance(items, Query):
            values = {_key(r[0]) for r in self.run(items, outer=row).rows}
            constant = not _query_aliases(items)
        elif isinstance(items, Param):
            values, constant = {_key(v) for v in self.values[items.name]}, True
        else:
            values = {_key(self.value(item, row)) for item in items}
            constant = not any(isinstance(i, Path) for i in items)
        if constant:
            self._sets[id(cond)] = values
        return values

    # ---- rows
    def run(self, query: Query, outer: dict | None = None, limit: int | None = None, offset: int = 0) -> Result:
        conjuncts = _conjuncts(query.where)
        local = set(query.aliases)
        pending = [(c, _aliases(c) & local) for c in conjuncts]
        order_by_root = (
            len(query.order) == 1
            and isinstance(query.order[0][0], Path)
            and query.order[0][0].alias == query.alias
            and [s.kind for s in query.order[0][0].steps] == ["id"]
        )
        descending = order_by_root and query.order[0][1]
        candidates = self._candidates(query, conjuncts, outer or {}, descending)
        collection_fetch = any(j.fetch and j.collection for j in query.joins)
        lazy = (order_by_root or not query.order) and not query.distinct and not collection_fetch

        def rows():
            bound = {query.alias}
            first = [(c, a) for c, a in pending if a <= bound]
            for obj in candidates:
                if not self.world.is_a(obj, query.cls) or not self.world.readable(self.session, obj):
                    continue
                row = dict(outer or {})
                row[query.alias] = obj
                if all(self.test(c, row) for c, _ in first):
                    yield from self._join(query, 0, row, bound, pending)

        fetches: dict = {}
        out = []
        wanted = None if limit is None else offset + limit
        seen_elements: set = set()
        for produced, row in enumerate(rows(), start=1):
            for j in query.joins:
                if j.fetch and j.collection and j.alias in row:
                    owner = row[j.path.alias]
                    key = (j.path.alias, j.path.props[-1])
                    element = row[j.alias]
                    if element is not None and (key, _ident(owner), element.index) not in seen_elements:
                        seen_elements.add((key, _ident(owner), element.index))
                        fetches.setdefault(key, {}).setdefault(_ident(owner), []).append(element)
            out.append(row)
            if lazy and wanted is not None and produced >= wanted:
                break
        if query.order and not (lazy and order_by_root):
            out.sort(key=lambda r: tuple(_Sortable(self.value(e, r), d) for e, d in query.order))
        selected = [self._select(query, r) for r in out]
        if query.distinct:
            seen, unique = set(), []
            for values in selected:
                key = tuple(_key(v) for v in values)
                if key not in seen:
                    seen.add(key)
                    unique.append(values)
            sql_rows = len(selected) if collection_fetch or any(j.fetch for j in query.joins) else len(unique)
            selected = unique
        else:
            sql_rows = len(selected)
        if limit is not None:
            page = selected[offset : offset + limit]
            db_rows = sql_rows if collection_fetch else min(len(page), sql_rows)
            selected = page
        else:
            db_rows = sql_rows
        return Result(selected, db_rows, fetches)

    def _join(self, query: Query, n: int, row: dict, bound: set, pending: list):
        if n == len(query.joins):
            yield row
            return
        join = query.joins[n]
        now = bound | {join.alias or f"#{n}"}
        checks = [c for c, a in pending if a <= now and not a <= bound]
        source = self.walk(Path(join.path.alias, join.path.props[:-1], join.path.steps[:-1]), row)
        last = join.path.steps[-1]
        if source is None:
            targets = []
        elif join.collection:
            targets = self.world.collection(source, last)
            targets = [t for t in targets if not hasattr(t.value, "id") or self.world.readable(self.session, t.value)]
        else:
            target = (
                self.world.details_of(source[1], last.name)
                if isinstance(source, tuple)
                else self.world.deref(source, last)
            )
            targets = [] if target is None or not self.world.readable(self.session, target) else [target]
        if not targets and join.outer:
            targets = [None]
        for target in targets:
            nxt = dict(row)
            if join.alias:
                nxt[join.alias] = target
            if all(self.test(c, nxt) for c in checks):
                yield from self._join(query, n + 1, nxt, now, pending)

    def _candidates(self, query: Query, conjuncts: list, outer: dict, descending: bool):
        """The root objects to consider, narrowed by an index where a conjunct allows it (the
        conjunct is still tested on each row)."""
        world, root = self.world, query.alias
        for c in conjuncts:
            if isinstance(c, (Cmp, In)):
                side = c.expr if isinstance(c, In) else c.left
                other = None if isinstance(c, In) else c.right
                if isinstance(c, Cmp) and not _is_root_path(side, root) and _is_root_path(other, root):
                    side, other = other, side
                    if c.op in ("<", ">", "<=", ">="):
                        continue
                if not _is_root_path(side, root) or (other is not None and root in _aliases_expr(other)):
                    continue
                kinds = [s.kind for s in side.steps]
                if isinstance(c, In):
                    if c.negated or isinstance(c.items, Query):
                        continue
                    keys = (
                        self.values[c.items.name]
                        if isinstance(c.items, Param)
                        else [self.value(i, outer) for i in c.items]
                    )
                elif c.op == "=":
                    keys = [self.value(other, outer)]
                elif kinds == ["id"] and c.op in (">", ">="):
                    ids = world.ids_of(query.cls)
                    start = bisect.bisect_right(ids, self.value(other, outer)) if c.op == ">" else None
                    if start is None:
                        start = bisect.bisect_left(ids, self.value(other, outer))
                    return _objects(world, query.cls, ids[start:], descending)
                else:
                    continue
                keys = [_key(k) for k in keys]
                if kinds == ["id"]:
                    return _objects(world, query.cls, sorted(set(keys)), descending)
                if kinds in (["ref"], ["ref", "id"]):
                    index = world.index(query.cls, side.steps[0].name)
                    found = sorted({o.id: o for k in set(keys) for o in index.get(k, ())}.items())
                    objs = [o for _, o in found]
                    return objs[::-1] if descending else objs
        ids = world.ids_of(query.cls)
        return _objects(world, query.cls, ids[::-1] if descending else ids, False)

    def _select(self, query: Query, row: dict) -> tuple:
        if not query.select:
            return (row[query.alias],)
        return tuple(self.value(e, row) if not _is_entity(e) else self._entity(e, row) for e in query.select)

    def _entity(self, expr: Path, row: dict):
        value = self.walk(expr, row) if expr.props else row[expr.alias]
        return value.value if isinstance(value, Element) else value


class _Sortable:
    """An ORDER BY key: PostgreSQL sorts nulls last ascending, first descending."""

    __slots__ = ("desc", "value")

    def __init__(self, value, desc: bool) -> None:
        self.value, self.desc = _key(value), desc

    def __lt__(self, other: _Sortable) -> bool:
        a, b = self.value, other.value
        if a == b:
            return False
        if a is None:
            return self.desc  # nulls last ascending: None is "largest"
        if b is None:
            return not self.desc
        return (a > b) if self.desc else (a < b)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Sortable) and self.value == other.value

    __hash__ = None


_COMPARE = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
}


def _key(value):
    """A comparable form: objects by (class family, id)."""
    if value is None or isinstance(value, (int, float, str, bool)):
        return value
    if isinstance(value, Element):
        return ("element", id(value.owner), value.index)
    ident = getattr(value, "id", None)
    if ident is not None and hasattr(value, "cls"):
        return ident
    return value


def _ident(obj) -> int:
    return obj.id if hasattr(obj, "id") else id(obj)


def _is_entity(expr) -> bool:
    return isinstance(expr, Path) and expr.kind in ("entity", "element") and expr.cls != "NamedValue"


def _is_root_path(expr, root: str) -> bool:
    return isinstance(expr, Path) and expr.alias == root and bool(expr.steps)


def _objects(world, cls: str, ids, descending: bool) -> list:
    ids = list(ids)
    if descending:
        ids.reverse()
    return [o for o in (world.get(cls, i) for i in ids) if o is not None]


def _conjuncts(cond) -> list:
    if cond is None:
        return []
    if isinstance(cond, BoolOp) and cond.op == "and":
        return [c for p in cond.parts for c in _conjuncts(p)]
    return [cond]


def _aliases_expr(expr) -> set:
    if isinstance(expr, Path):
        return {expr.alias}
    if isinstance(expr, Func):
        return set().union(*(_aliases_expr(a) for a in expr.args)) if expr.args else set()
    return set()


def _aliases(cond) -> set:
    """Every alias a condition uses, its subqueries' references to outer aliases included."""
    if cond is None:
        return set()
    if isinstance(cond, BoolOp):
        return set().union(*(_aliases(p) for p in cond.parts))
    if isinstance(cond, Not):
        return _aliases(cond.cond)
    if isinstance(cond, Cmp):
        return _aliases_expr(cond.left) | _aliases_expr(cond.right)
    if isinstance(cond, IsNull):
        return _aliases_expr(cond.expr)
    if isinstance(cond, In):
        out = _aliases_expr(cond.expr)
        if isinstance(cond.items, Query):
            out |= _query_aliases(cond.items)
        elif isinstance(cond.items, list):
            for item in cond.items:
                out |= _aliases_expr(item)
        return out
    if isinstance(cond, Exists):
        return _query_aliases(cond.query)
    return set()


def _query_aliases(query: Query) -> set:
    used = _aliases(query.where)
    for e in query.select:
        used |= _aliases_expr(e)
    return used - set(query.aliases)


def _params_of(query: Query, out: list) -> None:
    def expr(e):
        if isinstance(e, Param):
            out.append(e.name)
        elif isinstance(e, Func):
            for a in e.args:
                expr(a)

    def cond(c):
        if isinstance(c, BoolOp):
            for p in c.parts:
                cond(p)
        elif isinstance(c, Not):
            cond(c.cond)
        elif isinstance(c, Cmp):
            expr(c.left)
            expr(c.right)
        elif isinstance(c, IsNull):
            expr(c.expr)
        elif isinstance(c, In):
            expr(c.expr)
            if isinstance(c.items, Param):
                out.append(c.items.name)
            elif isinstance(c.items, Query):
                _params_of(c.items, out)
            elif isinstance(c.items, list):
                for i in c.items:
                    expr(i)
        elif isinstance(c, Exists):
            _params_of(c.query, out)

    for e in query.select:
        expr(e)
    cond(query.where)
    for e, _ in query.order:
        expr(e)
